package manifest_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/certcache"
	"github.com/contrast-cc/contrast/coordinator/manifest"
)

// The files testdata/original-*.json are manifests in the exact JSON shape
// the original Contrast writes (internal/manifest of its releases): every
// field it marshals, in its order, with its zero values (null slices,
// false, 0). original-tdx-early.json is the shape of its early releases
// (Rtrms, TD attributes and minimum SVNs). They must parse unchanged.
func TestOriginalManifests(t *testing.T) {
	testCases := map[string]struct {
		check          func(t *testing.T, m *manifest.Manifest)
		wantUnenforced []string
	}{
		"original-snp.json": {
			check: func(t *testing.T, m *manifest.Manifest) {
				require.Len(t, m.ReferenceValues.SNP, 2)
				s0, s1 := m.ReferenceValues.SNP[0], m.ReferenceValues.SNP[1]
				assert.Equal(t, attest.Platform("Metal-QEMU-SNP"), s0.Platform)
				assert.Equal(t, "Milan", s0.ProductName)
				assert.Equal(t, uint8(23), *s0.MinimumTCB.SNPVersion)
				assert.True(t, s0.PlatformInfo.SMTEnabled)
				assert.True(t, s0.GuestPolicy.SMT)
				assert.Equal(t, "Genoa", s1.ProductName)
				assert.Equal(t, uint64(2), s1.CPUs)
				assert.Len(t, s1.AllowedChipIDs, 1)
				assert.Len(t, m.WorkloadOwnerPubKeys, 1)
				assert.False(t, m.Simulated())
			},
			wantUnenforced: []string{"ReferenceValues.snp[1].CPUs", "ReferenceValues.snp[1].APEIP"},
		},
		"original-tdx.json": {
			check: func(t *testing.T, m *manifest.Manifest) {
				require.Len(t, m.ReferenceValues.TDX, 2)
				t0, t1 := m.ReferenceValues.TDX[0], m.ReferenceValues.TDX[1]
				assert.Equal(t, attest.Platform("Metal-QEMU-TDX"), t0.Platform)
				assert.Equal(t, 17, t0.MinTCBEvaluationDataNumber)
				assert.Len(t, t0.Rtmrs[3], 48)
				assert.Empty(t, t0.TdAttributes, "omitted: the validator requires tdx.DefaultTdAttributes")
				assert.Nil(t, t0.MinimumQeSvn)
				assert.True(t, t1.MemoryIntegrity)
				assert.Len(t, t1.AllowedPIIDs, 1)
				assert.Len(t, m.WorkloadOwnerKeyDigests, 1)
			},
			// MinTCBEvaluationDataNumber, MemoryIntegrity, SMTDisabled and
			// StaticPlatform are enforced.
			wantUnenforced: []string{"ReferenceValues.tdx[1].CPUs"},
		},
		"original-tdx-early.json": {
			check: func(t *testing.T, m *manifest.Manifest) {
				require.Len(t, m.ReferenceValues.TDX, 1)
				t0 := m.ReferenceValues.TDX[0]
				require.NotNil(t, t0.Rtrms)
				assert.Len(t, t0.Rtrms[0], 48)
				assert.Equal(t, uint16(8), *t0.MinimumQeSvn)
				assert.Equal(t, uint16(11), *t0.MinimumPceSvn)
				assert.Len(t, t0.MinimumTeeTcbSvn, 16)
				assert.Len(t, t0.TdAttributes, 8)
			},
		},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", name))
			require.NoError(t, err)
			m, err := manifest.Parse(data)
			require.NoError(t, err)
			tc.check(t, m)

			var unenforced []string
			for _, fe := range m.Unenforced() {
				unenforced = append(unenforced, fe.Path)
				assert.NotEmpty(t, fe.Msg)
			}
			assert.Equal(t, tc.wantUnenforced, unenforced)

			// The Coordinator refuses what it cannot enforce, naming each
			// path, until the manifest accepts them explicitly.
			err = m.CheckEnforceable()
			if len(tc.wantUnenforced) == 0 {
				require.NoError(t, err)
			} else {
				var ve *manifest.ValidationError
				require.ErrorAs(t, err, &ve)
				var refused []string
				for _, fe := range ve.Errors {
					refused = append(refused, fe.Path)
					assert.Contains(t, fe.Msg, "AcceptUnenforced")
				}
				assert.Equal(t, tc.wantUnenforced, refused)
				accepting := *m
				accepting.AcceptUnenforced = tc.wantUnenforced
				require.NoError(t, accepting.Validate())
				require.NoError(t, accepting.CheckEnforceable())
				assert.Len(t, accepting.Accepted(), len(tc.wantUnenforced))
			}

			vs, err := m.Validators(manifest.ValidatorOptions{Cache: certcache.New(certcache.Config{Offline: true})})
			require.NoError(t, err)
			assert.Len(t, vs, 1)

			// Re-encoded as we write it, it parses again to a manifest that
			// encodes the same.
			b, err := m.Marshal()
			require.NoError(t, err)
			m2, err := manifest.Parse(b)
			require.NoError(t, err)
			b2, err := m2.Marshal()
			require.NoError(t, err)
			assert.JSONEq(t, string(b), string(b2))
			assert.Equal(t, m.Unenforced(), m2.Unenforced())
		})
	}
}

// TestOriginalManifestTypo checks that a field the original does not have
// is still rejected inside an original manifest: a misspelling of a field
// that would make validation stricter must not be dropped.
func TestOriginalManifestTypo(t *testing.T) {
	testCases := map[string]struct {
		file, from, to, wantErr string
	}{
		"snp": {
			file: "original-snp.json", from: `"MinimumMitigationVector"`, to: `"MinimumMitigationVectors"`,
			wantErr: "ReferenceValues.snp[0].MinimumMitigationVectors: unknown field",
		},
		"tdx": {
			file: "original-tdx.json", from: `"SMTDisabled"`, to: `"SMTDisable"`,
			wantErr: "ReferenceValues.tdx[0].SMTDisable: unknown field; ReferenceValues.tdx[1].SMTDisable: unknown field",
		},
		"tdx early": {
			file: "original-tdx-early.json", from: `"MinimumPceSvn"`, to: `"MinimumPCESvn"`,
			wantErr: "", // encoding/json matches field names case-insensitively, as the original does
		},
		"platform of the other TEE": {
			file: "original-snp.json", from: `"Metal-QEMU-SNP-GPU"`, to: `"Metal-QEMU-TDX"`,
			wantErr: `ReferenceValues.snp[1].Platform: unknown SNP platform "Metal-QEMU-TDX"`,
		},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", tc.file))
			require.NoError(t, err)
			require.True(t, bytes.Contains(data, []byte(tc.from)))
			_, err = manifest.Parse(bytes.ReplaceAll(data, []byte(tc.from), []byte(tc.to)))
			if tc.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.wantErr)
		})
	}
}
