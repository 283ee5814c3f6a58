package stpeter

import (
	"container/list"
	"crypto/sha256"
	"sync"
	"time"
)

// tokenKey is a SHA-256 of a token: the raw token is never kept as a key.
type tokenKey [sha256.Size]byte

func keyOf(token string) tokenKey { return sha256.Sum256([]byte(token)) }

// answer is what st-peter said about a token: a user, or nil for UNAUTHENTICATED.
type answer struct {
	user *VerifiedUser
}

type cached struct {
	key        tokenKey
	answer     answer
	freshUntil time.Time
}

// verifyCache holds answers by token key, least recently used evicted past capacity.
type verifyCache struct {
	ttl        time.Duration
	invalidTTL time.Duration
	capacity   int
	now        func() time.Time

	mu      sync.Mutex
	entries map[tokenKey]*list.Element
	order   *list.List // of *cached, most recently used first
	// evictions counts evictions; an answer fetched while one happened is not stored,
	// so a verify racing a logout cannot put the logged-out token back.
	evictions uint64
}

func newVerifyCache(ttl, invalidTTL time.Duration, capacity int, now func() time.Time) *verifyCache {
	return &verifyCache{
		ttl:        ttl,
		invalidTTL: invalidTTL,
		capacity:   capacity,
		now:        now,
		entries:    make(map[tokenKey]*list.Element),
		order:      list.New(),
	}
}

// get answers a fresh entry for key; a stale one is dropped.
func (c *verifyCache) get(key tokenKey) (answer, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	elem, ok := c.entries[key]
	if !ok {
		return answer{}, false
	}
	entry := elem.Value.(*cached)
	if !c.now().Before(entry.freshUntil) {
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

// put stores an answer for as long as it may be served: the TTL, never past the token's
// own expiry; UNAUTHENTICATED for invalidTTL.
func (c *verifyCache) put(key tokenKey, a answer, generation uint64) {
	now := c.now()
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
	c.entries[key] = c.order.PushFront(&cached{key: key, answer: a, freshUntil: now.Add(lifetime)})
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

func (c *verifyCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}

func (c *verifyCache) remove(elem *list.Element) {
	c.order.Remove(elem)
	delete(c.entries, elem.Value.(*cached).key)
}
