package attest

import (
	"errors"
	"fmt"
)

// ReferenceEntry is what CheckReferenceSet needs of one reference-value entry.
type ReferenceEntry interface {
	// Validate checks the entry on its own; a *FieldError names the field.
	Validate() error
	// Simulated reports whether the entry names a simulated platform.
	Simulated() bool
}

// CheckReferenceSet validates every entry of one platform's reference values
// and that all of them name the same platform, real or simulated, and when
// simulated the same root. Real and simulated evidence can therefore never be
// accepted by the same validator. Every problem is reported (errors.Join of
// *FieldError), with the entry's index in the path (`[1].PlatformInfo`). It
// returns the platform and the simulated root ("" for real hardware).
func CheckReferenceSet[E any, P interface {
	*E
	ReferenceEntry
}](entries []E, real, simulated Platform, simRoot func(*E) string) (Platform, string, error) {
	if len(entries) == 0 {
		return "", "", fmt.Errorf("no %s reference values", real)
	}
	var platform Platform
	root := ""
	var errs []error
	for i := range entries {
		e := P(&entries[i])
		index := fmt.Sprintf("[%d]", i)
		if err := e.Validate(); err != nil {
			errs = append(errs, PrefixFieldErrors(index, err))
		}
		p := real
		if e.Simulated() {
			p = simulated
		}
		if i == 0 {
			platform, root = p, simRoot(&entries[i])
			continue
		}
		if p != platform {
			errs = append(errs, &FieldError{Path: index + ".Platform", Err: fmt.Errorf("real and simulated %s reference values must not mix", real)})
		} else if simRoot(&entries[i]) != root {
			errs = append(errs, &FieldError{Path: index + ".SimulatedRoot", Err: errors.New("all simulated entries must carry the same root")})
		}
	}
	if len(errs) > 0 {
		return "", "", errors.Join(errs...)
	}
	return platform, root, nil
}
