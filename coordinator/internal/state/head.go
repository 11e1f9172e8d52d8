package state

import (
	"context"
	"sync"
	"time"

	"github.com/contrast-cc/contrast/coordinator/internal/history"
)

// headReader reads the stored latest pointer for issuance checks, coalescing
// concurrent callers: a caller joins the next read that has not started
// yet, so every caller gets a read that began after it asked (which is what
// the issuance guarantee needs, see Authority.IssueMeshCert), while the
// store sees at most one read in flight however many issuances run.
type headReader struct {
	history *history.History
	timeout time.Duration

	mu      sync.Mutex
	next    *headRound // the round callers join; nil until someone asks
	running bool
}

type headRound struct {
	done   chan struct{}
	latest *history.LatestState
	err    error
}

// read returns the result of a read of the latest pointer that started
// after read was called.
func (r *headReader) read(ctx context.Context) (*history.LatestState, error) {
	r.mu.Lock()
	if r.next == nil {
		r.next = &headRound{done: make(chan struct{})}
	}
	round := r.next
	if !r.running {
		r.running = true
		// The round outlives any one caller (others share it): it runs
		// under its own timeout, not a caller's context.
		go r.loop() //nolint:gosec // G118: see above
	}
	r.mu.Unlock()
	select {
	case <-round.done:
		return round.latest, round.err
	case <-ctx.Done():
		return nil, ctx.Err() //nolint:wrapcheck // the caller's own context
	}
}

// loop runs rounds back to back while callers wait for one.
func (r *headReader) loop() {
	for {
		r.mu.Lock()
		round := r.next
		r.next = nil
		if round == nil {
			r.running = false
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
		round.latest, round.err = r.history.GetLatest(ctx)
		cancel()
		close(round.done)
	}
}
