package stpeter

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	pb "github.com/st-peter/st-peter/client/go/genpb/stpeter/authv1"
)

const (
	// Resubscription backoff: doubled after each stream that ended before it caught up.
	feedBackoffMin = 100 * time.Millisecond
	feedBackoffMax = 5 * time.Second
	// feedSilence: st-peter sends a checkpoint every 15 s on a quiet stream, so a stream
	// silent for three of them is dead even if its connection looks alive.
	feedSilence = 45 * time.Second
)

// FeedStatus is the state of a client's subscription to st-peter's revocation feed.
type FeedStatus struct {
	// Subscribed: a stream is open and caught up (its first checkpoint arrived). Cached
	// answers are served for the full cache TTL only while it is; otherwise for the
	// fallback TTL.
	Subscribed bool
	// LastSequence is the sequence of the last event received, checkpoints included; a
	// resubscription resumes after it. 0 before any.
	LastSequence uint64
	// Subscriptions counts the subscriptions started (WatchRevocations calls),
	// resubscriptions included. One per client while the stream stays up.
	Subscriptions uint64
}

// feed is a client's one subscription to the revocation feed: started by the first
// verify, resubscribed with backoff when its stream ends, stopped by Close. Each event
// evicts from the cache what it makes stale.
type feed struct {
	rpc   pb.AuthServiceClient
	cache *verifyCache
	// service, when the client has an API key, gives each subscription the then-current
	// service token as caller credentials, and hears about its revocation.
	service *serviceIdentity

	started atomic.Bool
	mu      sync.Mutex
	closed  bool
	cancel  context.CancelFunc
	done    chan struct{}

	lastSequence  atomic.Uint64
	subscriptions atomic.Uint64
}

// start subscribes unless the feed runs already or the client was closed.
func (f *feed) start() {
	if f == nil || f.started.Load() {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed || f.started.Load() {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel, f.done = cancel, make(chan struct{})
	f.started.Store(true)
	go f.run(ctx)
}

// close ends the subscription and waits until it has.
func (f *feed) close() {
	if f == nil {
		return
	}
	f.mu.Lock()
	f.closed = true
	cancel, done := f.cancel, f.done
	f.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

func (f *feed) status() FeedStatus {
	if f == nil {
		return FeedStatus{}
	}
	return FeedStatus{
		Subscribed:    f.cache.isSubscribed(),
		LastSequence:  f.lastSequence.Load(),
		Subscriptions: f.subscriptions.Load(),
	}
}

func (f *feed) run(ctx context.Context) {
	defer close(f.done)
	backoff := feedBackoffMin
	for {
		if f.watch(ctx) {
			backoff = feedBackoffMin
		}
		// Jitter, so the clients of a restarted server do not all come back at once.
		wait := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(backoff*2, feedBackoffMax)
	}
}

// watch follows one stream until it ends, and answers whether it caught up.
func (f *feed) watch(ctx context.Context) (caughtUp bool) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	silence := time.AfterFunc(feedSilence, cancel)
	defer silence.Stop()
	// The cache is marked unsubscribed the moment the stream ends, before the backoff.
	defer f.cache.unsubscribed()
	after := f.lastSequence.Load()
	var caller *serviceToken
	if f.service != nil {
		var err error
		if caller, err = f.service.get(ctx); err != nil {
			return false
		}
		ctx = withBearer(ctx, caller.token)
	}
	f.subscriptions.Add(1)
	stream, err := f.rpc.WatchRevocations(ctx, &pb.WatchRevocationsRequest{AfterSequence: after})
	if err != nil {
		return false
	}
	for first := true; ; first = false {
		event, err := stream.Recv()
		if err != nil {
			// The next subscription exchanges the key again.
			if callerRefused(err) {
				f.service.drop(caller)
			}
			return caughtUp
		}
		silence.Reset(feedSilence)
		// From now (after 0) nothing tells what changed before the stream opened, so
		// its first checkpoint drops everything cached until then.
		if f.apply(event, first && after == 0) {
			caughtUp = true
		}
	}
}

// apply evicts what an event makes stale, and answers whether it was a checkpoint.
func (f *feed) apply(event *pb.RevocationEvent, fromNow bool) (checkpoint bool) {
	switch change := event.GetChange().(type) {
	case *pb.RevocationEvent_TokenHash:
		if key := change.TokenHash; len(key) == len(tokenKey{}) {
			f.cache.evict(tokenKey(key))
			f.service.tokenRevoked(tokenKey(key))
		} else {
			f.cache.clear() // not a hash this client can match: fail closed
			f.service.forget()
		}
	case *pb.RevocationEvent_UserId:
		f.cache.evictUser(change.UserId)
		f.service.userChanged(change.UserId)
	case *pb.RevocationEvent_Reset_:
		f.cache.clear()
		f.service.forget()
	default:
		if len(event.ProtoReflect().GetUnknown()) > 0 {
			// A change this client version cannot read (from a newer server) looks like
			// a checkpoint here: drop everything rather than miss it.
			f.cache.clear()
			f.service.forget()
			break
		}
		checkpoint = true
		f.cache.caughtUp(fromNow)
	}
	f.lastSequence.Store(event.GetSequence())
	return checkpoint
}
