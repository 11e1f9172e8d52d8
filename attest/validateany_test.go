package attest

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type fixedValidator struct{ err error }

func (f fixedValidator) Validate(context.Context, []byte, [64]byte) (*Result, error) {
	if f.err != nil {
		return nil, f.err
	}
	return &Result{}, nil
}

// TestValidateAnyNamesTheEvidencesPlatform: with validators for several
// platforms, the rejection names the check of the validator for the
// evidence's platform, not "reference-values".
func TestValidateAnyNamesTheEvidencesPlatform(t *testing.T) {
	otherPlatform := fixedValidator{Errorf(CheckPlatform, "evidence is tdx, want snp")}
	for name, tc := range map[string]struct {
		vs   []Validator
		want Check
	}{
		"one relevant":     {[]Validator{otherPlatform, fixedValidator{Errorf(CheckRevocation, "no CRL")}}, CheckRevocation},
		"only platform":    {[]Validator{otherPlatform, otherPlatform}, CheckPlatform},
		"two same checks":  {[]Validator{fixedValidator{Errorf(CheckTCB, "a")}, fixedValidator{Errorf(CheckTCB, "b")}}, CheckTCB},
		"two other checks": {[]Validator{fixedValidator{Errorf(CheckTCB, "a")}, fixedValidator{Errorf(CheckQEIdentity, "b")}}, CheckReference},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ValidateAny(context.Background(), tc.vs, nil, [64]byte{})
			require.Error(t, err)
			got, ok := FailedCheck(err)
			require.True(t, ok)
			assert.Equal(t, tc.want, got)
		})
	}
	_, err := ValidateAny(context.Background(), []Validator{otherPlatform, fixedValidator{}}, nil, [64]byte{})
	require.NoError(t, err)
}
