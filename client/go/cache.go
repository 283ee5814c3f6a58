package stpeter

import (
	"container/list"
	"crypto/sha256"
	"sync"
	"time"
)

// tokenKey is a SHA-256 of a token: the raw token is never kept as a key. It is also the
// hash st-peter's revocation feed names a revoked token by.
type tokenKey [sha256.Size]byte

func keyOf(token string) tokenKey { return sha256.Sum256([]byte(token)) }

// answer is what st-peter said about a token: a user, or nil for UNAUTHENTICATED.
type answer struct {
	user *VerifiedUser
}

type cached struct {
	key    tokenKey
	answer answer
	// filledAt starts the fallback TTL, which applies while the feed is not subscribed.
	filledAt time.Time
	// freshUntil is the end of the TTL (or the invalid TTL), never past the token's expiry.
	freshUntil time.Time
}

// verifyCache holds answers by token key, least recently used evicted past capacity. A
// valid answer is served while fresh and, unless the revocation feed is subscribed (and
// so evicts whatever becomes wrong), only for fallbackTTL after it was filled.
type verifyCache struct {
	ttl         time.Duration
	fallbackTTL time.Duration
	invalidTTL  time.Duration
	capacity    int
	now         func() time.Time

	mu      sync.Mutex
	entries map[tokenKey]*list.Element
	order   *list.List // of *cached, most recently used first
	// byUser finds a user's entries for the feed's user events.
	byUser     map[string]map[tokenKey]struct{}
	subscribed bool
	// evictions counts evictions; an answer fetched while one happened is not stored,
	// so a verify racing a logout (or a feed event) cannot put a stale answer back.
	evictions uint64
}

func newVerifyCache(ttl, fallbackTTL, invalidTTL time.Duration, capacity int, now func() time.Time) *verifyCache {
	return &verifyCache{
		ttl:         ttl,
		fallbackTTL: fallbackTTL,
		invalidTTL:  invalidTTL,
		capacity:    capacity,
		now:         now,
		entries:     make(map[tokenKey]*list.Element),
		order:       list.New(),
		byUser:      make(map[string]map[tokenKey]struct{}),
	}
}

// get answers a servable entry for key; one that may not be served now is dropped.
func (c *verifyCache) get(key tokenKey) (answer, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	elem, ok := c.entries[key]
	if !ok {
		return answer{}, false
	}
	entry := elem.Value.(*cached)
	now := c.now()
	stale := !now.Before(entry.freshUntil) ||
		(entry.answer.user != nil && !c.subscribed && !now.Before(entry.filledAt.Add(c.fallbackTTL)))
	if stale {
		c.remove(elem)
		return answer{}, false
	}
	c.order.MoveToFront(elem)
	return entry.answer, true
}

// generation is read before a fetch and handed to put after it.
func (c *verifyCache) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.evictions
}

// put stores an answer fetched from fetchedAt on (when the RPC began: the answer is at
// least that fresh) for as long as it may be served: the TTL, never past the token's own
// expiry; UNAUTHENTICATED for invalidTTL.
func (c *verifyCache) put(key tokenKey, a answer, generation uint64, fetchedAt time.Time) {
	now := fetchedAt
	lifetime := c.invalidTTL
	if a.user != nil {
		lifetime = min(c.ttl, a.user.ExpiresAt.Sub(now))
	}
	if lifetime <= 0 || c.capacity <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if generation != c.evictions {
		return
	}
	if elem, ok := c.entries[key]; ok {
		c.remove(elem)
	}
	c.entries[key] = c.order.PushFront(&cached{key: key, answer: a, filledAt: now, freshUntil: now.Add(lifetime)})
	if a.user != nil {
		keys := c.byUser[a.user.User.UserID]
		if keys == nil {
			keys = make(map[tokenKey]struct{})
			c.byUser[a.user.User.UserID] = keys
		}
		keys[key] = struct{}{}
	}
	for c.order.Len() > c.capacity {
		c.remove(c.order.Back())
	}
}

func (c *verifyCache) evict(key tokenKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.evictions++
	if elem, ok := c.entries[key]; ok {
		c.remove(elem)
	}
}

// userOf answers whose token key is, from a valid answer held for it (fresh or not).
func (c *verifyCache) userOf(key tokenKey) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if elem, ok := c.entries[key]; ok {
		if user := elem.Value.(*cached).answer.user; user != nil {
			return user.User.UserID, true
		}
	}
	return "", false
}

// evictUser drops every answer about one user (disabled, roles changed, all sessions
// revoked).
func (c *verifyCache) evictUser(userID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.evictions++
	for key := range c.byUser[userID] {
		c.remove(c.entries[key])
	}
}

// clear drops every answer.
func (c *verifyCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clearLocked()
}

func (c *verifyCache) clearLocked() {
	c.evictions++
	clear(c.entries)
	clear(c.byUser)
	c.order.Init()
}

// caughtUp marks the feed subscribed; dropFirst clears everything in the same step, so an
// answer cached before the subscription is never served with the long TTL.
func (c *verifyCache) caughtUp(dropFirst bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if dropFirst {
		c.clearLocked()
	}
	c.subscribed = true
}

// unsubscribed: the feed's stream ended; the fallback TTL applies until it is back.
func (c *verifyCache) unsubscribed() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.subscribed = false
}

func (c *verifyCache) isSubscribed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.subscribed
}

func (c *verifyCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}

func (c *verifyCache) remove(elem *list.Element) {
	entry := elem.Value.(*cached)
	c.order.Remove(elem)
	delete(c.entries, entry.key)
	if entry.answer.user != nil {
		userID := entry.answer.user.User.UserID
		delete(c.byUser[userID], entry.key)
		if len(c.byUser[userID]) == 0 {
			delete(c.byUser, userID)
		}
	}
}
