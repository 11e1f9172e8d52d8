package images

import "time"

// LookupKind names what a Registry looked up.
type LookupKind string

// Lookup kinds. Each Resolve reports one manifest lookup and, when the
// manifest was found, one config lookup; each Accounts call reports one
// accounts lookup.
const (
	// KindManifest is resolving a reference to a manifest digest. A
	// digest-pinned reference whose configuration is cached is a hit and
	// contacts no registry; so is a tag resolved within the TagTTL whose
	// configuration is cached. Other tags miss.
	KindManifest LookupKind = "manifest"
	// KindConfig is the image configuration blob, cached by manifest digest.
	KindConfig LookupKind = "config"
	// KindAccounts is the scan of the image's layers for /etc/passwd and
	// /etc/group, cached by manifest digest.
	KindAccounts LookupKind = "accounts"
)

// LookupResult is the outcome of a lookup.
type LookupResult string

// Lookup results.
const (
	// ResultHit is a lookup answered from the Registry's cache.
	ResultHit LookupResult = "hit"
	// ResultMiss is a lookup that was not cached and was fetched from a
	// registry successfully.
	ResultMiss LookupResult = "miss"
	// ResultError is a lookup that was not cached and failed.
	ResultError LookupResult = "error"
	// ResultShared is a tag lookup that waited for a concurrent fetch of
	// the same tag (RegistryConfig.TagTTL) and shares its outcome; the
	// fetch itself is reported once, as a miss or an error.
	ResultShared LookupResult = "shared"
)

// LookupKinds and LookupResults list every value an Observer receives, so
// that observers can keep a bounded label set.
var (
	LookupKinds   = []LookupKind{KindManifest, KindConfig, KindAccounts}
	LookupResults = []LookupResult{ResultHit, ResultMiss, ResultError, ResultShared}
)

// Observer receives one call per lookup of a Registry. Implementations must
// be safe for concurrent use and must not block. The image is deliberately
// not passed: it would make an unbounded metric label.
type Observer interface {
	// ObserveLookup reports a lookup. d is the time the Registry spent on
	// it: for a miss or an error, from the cache miss to the end of the
	// fetch, including the wait for a free slot (RegistryConfig.MaxConcurrent)
	// and every mirror tried; for a hit, the cache lookup.
	ObserveLookup(kind LookupKind, result LookupResult, d time.Duration)
}

// ObserverFunc adapts a function to an Observer.
type ObserverFunc func(kind LookupKind, result LookupResult, d time.Duration)

// ObserveLookup implements Observer.
func (f ObserverFunc) ObserveLookup(kind LookupKind, result LookupResult, d time.Duration) {
	f(kind, result, d)
}

type nopObserver struct{}

func (nopObserver) ObserveLookup(LookupKind, LookupResult, time.Duration) {}
