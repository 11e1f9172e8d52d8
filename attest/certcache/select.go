package certcache

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// DefaultMaxAge is the default maximum age of a mutable document (CRL, TCB
// info, QE identity): see Freshness.
const DefaultMaxAge = 7 * 24 * time.Hour

// clockSkew is how far in the future a document's issue date may lie.
const clockSkew = 5 * time.Minute

// Freshness decides whether a mutable document may be used.
type Freshness struct {
	// MaxAge bounds the age of a document: the time since it was issued,
	// or, for this verifier's own copy, since it was obtained from the
	// vendor (or seeded by an operator), whichever is later. Zero means
	// DefaultMaxAge.
	MaxAge time.Duration
}

// Check returns when a document issued at issued, valid until next, stops
// being usable, or an error if it is not usable at now. fetchedAt is when
// this verifier obtained its own copy; zero for a copy carried by evidence,
// which is as old as its issue date says.
func (f Freshness) Check(now, issued, next, fetchedAt time.Time) (time.Time, error) {
	maxAge := f.MaxAge
	if maxAge == 0 {
		maxAge = DefaultMaxAge
	}
	if issued.After(now.Add(clockSkew)) {
		return time.Time{}, fmt.Errorf("issued %s, in the future", issued.UTC().Format(time.RFC3339))
	}
	if !now.Before(next) {
		return time.Time{}, fmt.Errorf("expired %s (next update)", next.UTC().Format(time.RFC3339))
	}
	basis := issued
	if fetchedAt.After(basis) {
		basis = fetchedAt
	}
	deadline := basis.Add(maxAge)
	if !now.Before(deadline) {
		return time.Time{}, fmt.Errorf("older than the maximum age %s (issued %s, obtained %s)", maxAge,
			issued.UTC().Format(time.RFC3339), describeFetched(fetchedAt))
	}
	if next.Before(deadline) {
		deadline = next
	}
	return deadline, nil
}

func describeFetched(t time.Time) string {
	if t.IsZero() {
		return "from the evidence"
	}
	return t.UTC().Format(time.RFC3339)
}

// Selected is the copy of a document that Select chose.
type Selected[T any] struct {
	Doc T
	// Issued is the document's signed issue date (thisUpdate, issueDate).
	Issued time.Time
	// Artifact is the chosen copy; its FetchedAt is zero for the evidence's.
	Artifact *Artifact
	// FromEvidence reports that the evidence's copy was chosen.
	FromEvidence bool
}

// Select returns the newest authentic copy of the document at url: this
// verifier's own (Cache.Get) or the one the evidence carries (carried, may
// be nil). verify parses a copy, checks its signature against the trusted
// root and returns it with its signed issue date. On a tie the own copy
// wins, so a copy carried by evidence is used only when it is strictly
// newer than the verifier's own: an older, still valid document can never
// replace a fresher one. A carried copy is never stored. The caller checks
// the chosen copy's Freshness.
func Select[T any](ctx context.Context, c *Cache, ns, url string, kind Kind, carried *Artifact,
	verify func(*Artifact) (T, time.Time, error),
) (*Selected[T], error) {
	var errs []error
	var best *Selected[T]
	own, err := c.Get(ctx, ns, url, kind)
	if err != nil {
		errs = append(errs, err)
	} else if doc, issued, verr := verify(own); verr != nil {
		errs = append(errs, fmt.Errorf("cached %s %s: %w", kind, url, verr))
	} else {
		best = &Selected[T]{Doc: doc, Issued: issued, Artifact: own}
	}
	if carried != nil {
		ev := *carried
		ev.FetchedAt = time.Time{}
		if doc, issued, verr := verify(&ev); verr != nil {
			errs = append(errs, fmt.Errorf("%s %s carried by the evidence: %w", kind, url, verr))
		} else if best == nil || issued.After(best.Issued) {
			best = &Selected[T]{Doc: doc, Issued: issued, Artifact: &ev, FromEvidence: true}
		}
	}
	if best == nil {
		return nil, errors.Join(errs...)
	}
	return best, nil
}
