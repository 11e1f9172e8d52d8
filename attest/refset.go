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
// accepted by the same validator. Field errors carry the entry's index
// (`[1].PlatformInfo`). It returns the platform and the simulated root ("" for
// real hardware).
func CheckReferenceSet[E any, P interface {
	*E
	ReferenceEntry
}](entries []E, real, simulated Platform, simRoot func(*E) string) (Platform, string, error) {
	if len(entries) == 0 {
		return "", "", fmt.Errorf("no %s reference values", real)
	}
	var platform Platform
	root := ""
	for i := range entries {
		e := P(&entries[i])
		if err := e.Validate(); err != nil {
			var fe *FieldError
			if errors.As(err, &fe) {
				return "", "", &FieldError{Path: fmt.Sprintf("[%d].%s", i, fe.Path), Err: fe.Err}
			}
			return "", "", fmt.Errorf("reference values [%d]: %w", i, err)
		}
		p := real
		if e.Simulated() {
			p = simulated
		}
		if i == 0 {
			platform, root = p, simRoot(&entries[i])
		}
		if p != platform {
			return "", "", &FieldError{Path: fmt.Sprintf("[%d].Platform", i), Err: fmt.Errorf("real and simulated %s reference values must not mix", real)}
		}
		if simRoot(&entries[i]) != root {
			return "", "", &FieldError{Path: fmt.Sprintf("[%d].SimulatedRoot", i), Err: errors.New("all simulated entries must carry the same root")}
		}
	}
	return platform, root, nil
}
