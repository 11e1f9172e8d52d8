package attest

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type fakeEntry struct {
	sim  bool
	root string
	err  error
}

func (f *fakeEntry) Validate() error { return f.err }
func (f *fakeEntry) Simulated() bool { return f.sim }

func TestCheckReferenceSet(t *testing.T) {
	root := func(f *fakeEntry) string { return f.root }
	testCases := map[string]struct {
		entries      []fakeEntry
		wantPlatform Platform
		wantRoot     string
		wantPath     string
		wantErr      bool
	}{
		"real":                   {entries: []fakeEntry{{}, {}}, wantPlatform: PlatformSNP},
		"simulated":              {entries: []fakeEntry{{sim: true, root: "r"}, {sim: true, root: "r"}}, wantPlatform: PlatformSimulatedSNP, wantRoot: "r"},
		"empty":                  {wantErr: true},
		"real then simulated":    {entries: []fakeEntry{{}, {sim: true}}, wantPath: "[1].Platform"},
		"simulated then real":    {entries: []fakeEntry{{sim: true, root: "r"}, {}}, wantPath: "[1].Platform"},
		"different sim roots":    {entries: []fakeEntry{{sim: true, root: "a"}, {sim: true, root: "b"}}, wantPath: "[1].SimulatedRoot"},
		"field error is indexed": {entries: []fakeEntry{{}, {err: &FieldError{Path: "PlatformInfo", Err: errors.New("missing")}}}, wantPath: "[1].PlatformInfo"},
		"plain error":            {entries: []fakeEntry{{err: errors.New("bad")}}, wantErr: true},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			p, r, err := CheckReferenceSet(tc.entries, PlatformSNP, PlatformSimulatedSNP, root)
			if tc.wantPath != "" {
				var fe *FieldError
				require.ErrorAs(t, err, &fe)
				assert.Equal(t, tc.wantPath, fe.Path)
				return
			}
			if tc.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.wantPlatform, p)
			assert.Equal(t, tc.wantRoot, r)
		})
	}
}

func TestCheckReferenceSetReportsEveryProblem(t *testing.T) {
	entries := []fakeEntry{
		{err: errors.Join(&FieldError{Path: "ProductName", Err: errors.New("unknown")}, &FieldError{Path: "TrustedMeasurement", Err: errors.New("missing")})},
		{sim: true, root: "r"},
		{err: &FieldError{Path: "PlatformInfo", Err: errors.New("missing")}},
	}
	_, _, err := CheckReferenceSet(entries, PlatformSNP, PlatformSimulatedSNP, func(f *fakeEntry) string { return f.root })
	var paths []string
	for _, fe := range FieldErrors(err) {
		paths = append(paths, fe.Path)
	}
	assert.Equal(t, []string{"[0].ProductName", "[0].TrustedMeasurement", "[1].Platform", "[2].PlatformInfo"}, paths)
}
