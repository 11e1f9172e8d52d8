package manifest_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/snp"
	"github.com/contrast-cc/contrast/attest/tdx"
	"github.com/contrast-cc/contrast/coordinator/coordinatortest"
	"github.com/contrast-cc/contrast/coordinator/manifest"
)

func validManifest(t testing.TB) *manifest.Manifest {
	t.Helper()
	p, err := coordinatortest.SharedPlatform()
	require.NoError(t, err)
	return p.Manifest(coordinatortest.NewPolicy("coordinator"), []coordinatortest.Workload{
		{Policy: coordinatortest.NewPolicy("web"), Entry: manifest.PolicyEntry{SANs: []string{"web", "*", "*.web.svc", "10.0.0.1", "::1", "spiffe://cluster/web"}, WorkloadSecretID: "web"}},
	}, &coordinatortest.OwnerKey().PublicKey)
}

// roundTrip re-parses m through JSON into a generic map so a test can break
// any field, then parses it back.
func mutate(t *testing.T, m *manifest.Manifest, f func(map[string]any)) []byte {
	t.Helper()
	var raw map[string]any
	require.NoError(t, json.Unmarshal(coordinatortest.JSON(m), &raw))
	f(raw)
	b, err := json.Marshal(raw)
	require.NoError(t, err)
	return b
}

func snp0(raw map[string]any) map[string]any {
	return raw["ReferenceValues"].(map[string]any)["snp"].([]any)[0].(map[string]any)
}

func TestParseValidation(t *testing.T) {
	u := func(v uint8) *uint8 { return &v }
	coordHash := string(coordinatortest.NewPolicy("coordinator").HexHash())
	testCases := map[string]struct {
		mutate  func(map[string]any)
		raw     string
		wantErr []string // every one must appear
		notErr  []string // none may appear
	}{
		"valid": {mutate: func(map[string]any) {}},
		"missing SNPVersion": {
			mutate:  func(r map[string]any) { delete(snp0(r)["MinimumTCB"].(map[string]any), "SNPVersion") },
			wantErr: []string{"ReferenceValues.snp[0].MinimumTCB.SNPVersion: missing"},
		},
		"every error is reported": {
			mutate: func(r map[string]any) {
				delete(snp0(r)["MinimumTCB"].(map[string]any), "SNPVersion")
				delete(snp0(r)["MinimumTCB"].(map[string]any), "TEEVersion")
				snp0(r)["TrustedMeasurement"] = "abcd"
				r["Policies"].(map[string]any)["zz"] = map[string]any{"SANs": []any{"bad san!"}}
			},
			wantErr: []string{
				"ReferenceValues.snp[0].MinimumTCB.SNPVersion: missing",
				"ReferenceValues.snp[0].MinimumTCB.TEEVersion: missing",
				"ReferenceValues.snp[0].TrustedMeasurement: must be 48 bytes",
				"Policies[zz]: policy hash must be 64 lowercase hex characters",
				"Policies[zz].SANs[0]: invalid DNS SAN",
			},
		},
		"Turin": {
			mutate:  func(r map[string]any) { snp0(r)["ProductName"] = "Turin" },
			wantErr: []string{"ReferenceValues.snp[0].ProductName: product line Turin is not supported yet", "FMC SPL"},
		},
		"accepting a field that is not set": {
			mutate:  func(r map[string]any) { r["AcceptUnenforced"] = []any{"ReferenceValues.snp[0].CPUs"} },
			wantErr: []string{`AcceptUnenforced[0]: "ReferenceValues.snp[0].CPUs" is not a field this manifest sets`},
		},
		"accepting a set unenforced field": {
			mutate: func(r map[string]any) {
				snp0(r)["CPUs"] = 2
				r["AcceptUnenforced"] = []any{"ReferenceValues.snp[0].CPUs"}
			},
		},
		"no coordinator policy": {
			mutate: func(r map[string]any) {
				delete(r["Policies"].(map[string]any)[coordHash].(map[string]any), "Role")
			},
			wantErr: []string{`Policies: no policy with Role "coordinator"`},
		},
		"unknown role": {
			mutate:  func(r map[string]any) { r["Policies"].(map[string]any)[coordHash].(map[string]any)["Role"] = "admin" },
			wantErr: []string{`.Role: unknown role "admin"`, "no policy with Role"},
		},
		"uppercase policy hash": {
			mutate: func(r map[string]any) {
				pol := r["Policies"].(map[string]any)
				pol[strings.ToUpper(coordHash)] = pol[coordHash]
				delete(pol, coordHash)
			},
			wantErr: []string{"policy hash must be 64 lowercase hex characters"},
		},
		"short policy hash": {
			mutate: func(r map[string]any) {
				r["Policies"].(map[string]any)["abcd"] = map[string]any{"SANs": []any{"x"}}
			},
			wantErr: []string{"Policies[abcd]: policy hash"},
		},
		"mixed simulated and real": {
			mutate: func(r map[string]any) {
				real := snp.ReferenceValues{
					ProductName: "Milan", TrustedMeasurement: make([]byte, 48),
					MinimumTCB:   snp.TCB{BootloaderVersion: u(1), TEEVersion: u(1), SNPVersion: u(1), MicrocodeVersion: u(1)},
					PlatformInfo: &coordinatortest.SNPPlatformInfo,
				}
				rv := r["ReferenceValues"].(map[string]any)
				rv["snp"] = append(rv["snp"].([]any), toMap(real))
			},
			wantErr: []string{"ReferenceValues: mixes simulated (ReferenceValues.snp[0]) and real (ReferenceValues.snp[1]) platforms"},
		},
		"tdx missing fields": {
			mutate: func(r map[string]any) {
				rv := r["ReferenceValues"].(map[string]any)
				rv["tdx"] = []any{toMap(tdx.ReferenceValues{Platform: attest.PlatformTDX})}
			},
			wantErr: []string{"ReferenceValues.tdx[0].MrTd: missing", "ReferenceValues.tdx[0].Xfam: missing", "ReferenceValues.tdx[0].Rtmrs[3]: missing"},
		},
		"every reference-value error of an entry": {
			mutate: func(r map[string]any) {
				snp0(r)["ProductName"] = "Naples"
				snp0(r)["TrustedMeasurement"] = "abcd"
				snp0(r)["PlatformInfo"] = nil
				snp0(r)["Platform"] = "Metal-QEMU-TDX"
			},
			wantErr: []string{
				"ReferenceValues.snp[0].ProductName: ",
				"ReferenceValues.snp[0].TrustedMeasurement: must be 48 bytes, got 2",
				"ReferenceValues.snp[0].PlatformInfo: missing",
				`ReferenceValues.snp[0].Platform: unknown SNP platform "Metal-QEMU-TDX"`,
			},
		},
		"no reference values": {
			mutate:  func(r map[string]any) { r["ReferenceValues"] = map[string]any{} },
			wantErr: []string{"ReferenceValues: no reference values for any platform"},
		},
		"bad owner key": {
			mutate:  func(r map[string]any) { r["WorkloadOwnerPubKeys"] = []any{"zz"} },
			wantErr: []string{"WorkloadOwnerPubKeys[0]: key must be PEM or hex-encoded DER"},
		},
		"bad owner digest": {
			mutate:  func(r map[string]any) { r["WorkloadOwnerKeyDigests"] = []any{"abcd"} },
			wantErr: []string{"WorkloadOwnerKeyDigests[0]: must be 32 hex-encoded bytes"},
		},
		"seed share key not RSA": {
			mutate: func(r map[string]any) {
				r["SeedshareOwnerPubKeys"] = []any{string(coordinatortest.PubHex(&coordinatortest.OwnerKey().PublicKey))}
			},
			wantErr: []string{"SeedshareOwnerPubKeys[0]: seed-share owner key must be RSA"},
		},
		"unknown field": {
			mutate:  func(r map[string]any) { r["WorkloadOwnerKeys"] = []any{} },
			wantErr: []string{"WorkloadOwnerKeys: unknown field"},
		},
		"unknown fields carry their path": {
			mutate: func(r map[string]any) {
				snp0(r)["MinimumMitigationVectr"] = 1 // typo of an original field
				snp0(r)["MinimumTCB"].(map[string]any)["SNPVer"] = 1
				r["Policies"].(map[string]any)[coordHash].(map[string]any)["Sans"] = []any{"x"} // case-insensitive: SANs
				r["Policies"].(map[string]any)[coordHash].(map[string]any)["Roles"] = "x"
			},
			wantErr: []string{
				"ReferenceValues.snp[0].MinimumMitigationVectr: unknown field",
				"ReferenceValues.snp[0].MinimumTCB.SNPVer: unknown field",
				"Policies[" + coordHash + "].Roles: unknown field",
			},
			notErr: []string{"Sans"},
		},
		"type errors keep the index": {
			mutate: func(r map[string]any) {
				snp0(r)["MinimumTCB"].(map[string]any)["SNPVersion"] = "23"
				snp0(r)["MinimumTCB"].(map[string]any)["TEEVersion"] = 300
				snp0(r)["TrustedMeasurement"] = "zz"
				snp0(r)["AllowedChipIDs"] = []any{"00", 7}
				r["Policies"].(map[string]any)[coordHash].(map[string]any)["SANs"] = []any{"ok", 1}
			},
			wantErr: []string{
				"ReferenceValues.snp[0].MinimumTCB.SNPVersion: cannot decode JSON string into uint8",
				"ReferenceValues.snp[0].MinimumTCB.TEEVersion: cannot decode JSON number 300 into uint8",
				"ReferenceValues.snp[0].TrustedMeasurement: hex bytes: encoding/hex: invalid byte",
				"ReferenceValues.snp[0].AllowedChipIDs[1]: cannot decode JSON number",
				"Policies[" + coordHash + "].SANs[1]: cannot decode JSON number into string",
			},
		},
		"too many array elements": {
			mutate: func(r map[string]any) {
				rv := r["ReferenceValues"].(map[string]any)
				rv["tdx"] = []any{map[string]any{"Rtmrs": []any{"", "", "", "", ""}}}
			},
			wantErr: []string{"ReferenceValues.tdx[0].Rtmrs: has 5 elements, at most 4 allowed"},
		},
		"revoked TCB status allowed": {
			mutate: func(r map[string]any) {
				rv := r["ReferenceValues"].(map[string]any)
				rv["tdx"] = []any{map[string]any{"AllowedTCBStatuses": []any{"OutOfDate", "Revoked"}}}
			},
			wantErr: []string{`ReferenceValues.tdx[0].AllowedTCBStatuses[1]: "Revoked" is not an acceptable TCB status`},
		},
		"wrong type": {
			mutate:  func(r map[string]any) { r["Policies"] = []any{} },
			wantErr: []string{"Policies: cannot decode JSON array"},
		},
		"wrong container type nested": {
			mutate:  func(r map[string]any) { snp0(r)["MinimumTCB"] = []any{} },
			wantErr: []string{"ReferenceValues.snp[0].MinimumTCB: cannot decode JSON array into snp.TCB"},
		},
		"not an object": {raw: "[]", wantErr: []string{"cannot decode JSON array into manifest.Manifest"}},
		"trailing data": {raw: "{} {}", wantErr: []string{"trailing data"}},
		"trailing junk": {raw: "{} ]", wantErr: []string{"trailing data"}},
		"not JSON":      {raw: "nope", wantErr: []string{"invalid character"}},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			var data []byte
			if tc.raw != "" {
				data = []byte(tc.raw)
			} else {
				data = mutate(t, validManifest(t), tc.mutate)
			}
			m, err := manifest.Parse(data)
			if len(tc.wantErr) == 0 {
				require.NoError(t, err)
				require.NotNil(t, m)
				return
			}
			require.Error(t, err)
			var ve *manifest.ValidationError
			require.ErrorAs(t, err, &ve)
			for _, w := range tc.wantErr {
				assert.Contains(t, err.Error(), w)
			}
			for _, w := range tc.notErr {
				assert.NotContains(t, err.Error(), w)
			}
		})
	}
}

func toMap(v any) map[string]any {
	b, _ := json.Marshal(v)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return m
}

func TestValidateSAN(t *testing.T) {
	testCases := map[string]bool{
		// DNS names and IP addresses
		"web": true, "web.emojivoto.svc.cluster.local": true, "*.example.com": true, "*": true,
		"10.1.2.3": true, "2001:db8::1": true, "::1": true,
		"": false, "a..b": false, "*.*.example.com": false, "ex*ample.com": false, "-web": false, "web-": false,
		"web/path": false, "fe80::1%eth0": false, strings.Repeat("a", 64): false, "héllo": false, "web.": false,
		// absolute URIs (RFC 3986)
		"spiffe://cluster.local/ns/x/sa/y": true, "spiffe://trust_domain/workload": true, "urn://x": true,
		"urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6": true, "urn:ietf:params:oauth:x": true,
		"https://example.com:8443/a/b?q=1#frag": true, "https://[2001:db8::1]/x": true, "file:///etc/hosts": true,
		"mailto:owner@example.com": true, "tag:example.com,2026:web": true, "x-scheme+v1.2:opaque": true,
		"https://example.com/%20x": true, "https://user@example.com/": true,
		"://x": false, "1http://x": false, "-a:b": false, "urn:": false, "http://": false, "spiffe://": false,
		"web:8080": false, "10.0.0.1:443": false, "http://exa mple.com/": false, "a:b c": false, `urn:x"y`: false,
		"urn:uuid:%zz": false, "urn:x%4": false, "http://bad..host/x": false, "http://host./x": false,
		"http://*.example.com/": false, "http://[::1/x": false, "hé:x": false, "urn:x\\y": false, "urn:{x}": false,
		"http://example.com:port/": false, "urn:x\x00": false,
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	for san, ok := range testCases {
		t.Run(san, func(t *testing.T) {
			err := manifest.ValidateSAN(san)
			if !ok {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			if _, ipErr := netip.ParseAddr(san); ipErr != nil && strings.Contains(san, ":") {
				requireX509URI(t, key, san)
			}
		})
	}
}

// requireX509URI checks that crypto/x509 writes and reads back a
// certificate with the URI SAN, as the mesh CA issues it.
func requireX509URI(t *testing.T, key *ecdsa.PrivateKey, san string) {
	t.Helper()
	u, err := url.Parse(san)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), URIs: []*url.URL{u}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	require.Len(t, cert.URIs, 1)
	assert.Equal(t, san, cert.URIs[0].String())
}

func TestPolicyHashFromDigest(t *testing.T) {
	h := sha256.Sum256([]byte("policy"))
	want := manifest.NewHexString(h[:])
	mrConfigID := append(append([]byte(nil), h[:]...), make([]byte, 16)...)
	dirty := append([]byte(nil), mrConfigID...)
	dirty[47] = 1
	testCases := map[string]struct {
		digest []byte
		ok     bool
	}{
		"snp host data":        {digest: h[:], ok: true},
		"tdx mrconfigid":       {digest: mrConfigID, ok: true},
		"tdx non-zero padding": {digest: dirty},
		"wrong size":           {digest: h[:31]},
		"empty":                {digest: nil},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			got, ok := manifest.PolicyHashFromDigest(tc.digest)
			require.Equal(t, tc.ok, ok)
			if ok {
				assert.Equal(t, want, got)
			}
		})
	}
}

func TestOwnerAuthorization(t *testing.T) {
	owner := coordinatortest.OwnerKey()
	digestOwner := coordinatortest.OwnerKey()
	stranger := coordinatortest.OwnerKey()
	m := validManifest(t)
	m.WorkloadOwnerPubKeys = []manifest.HexString{coordinatortest.PubHex(&owner.PublicKey)}
	d, err := manifest.KeyDigest(&digestOwner.PublicKey)
	require.NoError(t, err)
	m.WorkloadOwnerKeyDigests = []manifest.HexString{manifest.NewHexString(d)}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)

	testCases := map[string]struct {
		key  any
		want bool
	}{
		"listed public key":    {key: &owner.PublicKey, want: true},
		"listed key digest":    {key: &digestOwner.PublicKey, want: true},
		"unlisted key":         {key: &stranger.PublicKey},
		"unlisted other curve": {key: &p384.PublicKey},
		"no key":               {key: nil},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, tc.want, m.IsOwner(tc.key))
		})
	}
}

func TestPEMKeys(t *testing.T) {
	m := validManifest(t)
	m.WorkloadOwnerPubKeys = []manifest.HexString{manifest.HexString(coordinatortest.PubPEM(&coordinatortest.OwnerKey().PublicKey))}
	m.SeedshareOwnerPubKeys = []manifest.HexString{manifest.HexString(coordinatortest.PubPEM(&coordinatortest.SeedShareKey().PublicKey))}
	_, err := manifest.Parse(coordinatortest.JSON(m))
	require.NoError(t, err)
}

func TestMarshalRoundTrip(t *testing.T) {
	m := validManifest(t)
	b, err := m.Marshal()
	require.NoError(t, err)
	m2, err := manifest.Parse(b)
	require.NoError(t, err)
	assert.Equal(t, m.Policies, m2.Policies)
	assert.True(t, m2.Simulated())
	assert.Len(t, m2.CoordinatorPolicyHashes(), 1)
}

// TestUpdateFuzzSeed writes a valid manifest to the fuzz seed corpus when
// UPDATE_FUZZ_SEED=1 (the seed is stored so that fuzz workers do not each
// build a simulated platform).
func TestUpdateFuzzSeed(t *testing.T) {
	if os.Getenv("UPDATE_FUZZ_SEED") != "1" {
		t.Skip("set UPDATE_FUZZ_SEED=1 to rewrite testdata/fuzz/FuzzParse/valid-manifest")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzParse")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	data := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", coordinatortest.JSON(validManifest(t)))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "valid-manifest"), []byte(data), 0o600))
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"Policies":{"00":{"SANs":["*"]}},"ReferenceValues":{"tdx":[{}]}}`))
	f.Add([]byte(`{}`))
	originals, err := filepath.Glob(filepath.Join("testdata", "original-*.json"))
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range originals {
		data, err := os.ReadFile(name) //nolint:gosec // test data
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := manifest.Parse(data)
		if err != nil {
			var ve *manifest.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Parse error is not a *ValidationError: %v", err)
			}
			return
		}
		// A parsed manifest re-encodes to one that parses again.
		b, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := manifest.Parse(b); err != nil {
			t.Fatalf("re-encoded manifest does not parse: %v", err)
		}
	})
}
