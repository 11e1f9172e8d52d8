package attest

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestJoinPath(t *testing.T) {
	testCases := map[string]struct{ prefix, path, want string }{
		"field":        {"ReferenceValues.snp[0]", "MinimumTCB.SNPVersion", "ReferenceValues.snp[0].MinimumTCB.SNPVersion"},
		"index":        {"ReferenceValues.snp", "[1].PlatformInfo", "ReferenceValues.snp[1].PlatformInfo"},
		"no prefix":    {"", "PlatformInfo", "PlatformInfo"},
		"no path":      {"ReferenceValues.tdx[0]", "", "ReferenceValues.tdx[0]"},
		"both missing": {"", "", ""},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, tc.want, JoinPath(tc.prefix, tc.path))
		})
	}
}

func TestFieldErrors(t *testing.T) {
	a := FieldErrorf("ProductName", "unknown")
	b := FieldErrorf("MinimumTCB.SNPVersion", "missing")
	plain := errors.New("plain")
	testCases := map[string]struct {
		err       error
		wantPaths []string
	}{
		"nil":         {err: nil},
		"one":         {err: a, wantPaths: []string{"ProductName"}},
		"joined":      {err: errors.Join(a, b), wantPaths: []string{"ProductName", "MinimumTCB.SNPVersion"}},
		"nested join": {err: errors.Join(errors.Join(a), plain, errors.Join(b)), wantPaths: []string{"ProductName", "", "MinimumTCB.SNPVersion"}},
		"plain":       {err: plain, wantPaths: []string{""}},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			fes := FieldErrors(tc.err)
			paths := make([]string, 0, len(fes))
			for _, fe := range fes {
				paths = append(paths, fe.Path)
				require.Error(t, fe.Err)
			}
			if tc.wantPaths == nil {
				assert.Empty(t, fes)
				return
			}
			assert.Equal(t, tc.wantPaths, paths)
		})
	}
}

func TestPrefixFieldErrors(t *testing.T) {
	require.NoError(t, PrefixFieldErrors("[0]", nil))
	err := PrefixFieldErrors("[2]", errors.Join(FieldErrorf("ProductName", "unknown"), errors.New("plain")))
	var paths []string
	for _, fe := range FieldErrors(err) {
		paths = append(paths, fe.Path)
	}
	assert.Equal(t, []string{"[2].ProductName", "[2]"}, paths)
	assert.Equal(t, "[2].ProductName: unknown\n[2]: plain", err.Error())
}
