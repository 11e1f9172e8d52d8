package policy_test

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/webhook/policy"
)

// gunzipStrict decodes exactly one gzip member (as Kata's Rust readers,
// flate2's GzDecoder and async-compression's GzipDecoder, do) and fails on
// trailing data.
func gunzipStrict(t *testing.T, z []byte) []byte {
	t.Helper()
	br := bytes.NewReader(z) // an io.ByteReader: gzip reads no further than the member
	zr, err := gzip.NewReader(br)
	require.NoError(t, err)
	zr.Multistream(false)
	doc, err := io.ReadAll(zr)
	require.NoError(t, err, "gzip member")
	require.Zero(t, br.Len(), "bytes after the gzip member")
	return doc
}

// gunzipCLI decodes z with GNU gzip, an inflater independent of Go's. It is
// in every Debian image; a CI run without it fails.
func gunzipCLI(t *testing.T, z []byte) []byte {
	t.Helper()
	bin, err := exec.LookPath("gzip")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("gzip is required in CI: %v", err)
		}
		t.Skip("gzip not installed")
	}
	cmd := exec.CommandContext(t.Context(), bin, "-dc")
	cmd.Stdin = bytes.NewReader(z)
	out, err := cmd.Output()
	require.NoError(t, err)
	return out
}

// TestInitDataAnnotationEncoding checks that the annotation of every
// emojivoto policy is one standard gzip member of the initdata TOML whose
// SHA-256 is the policy hash, readable by Go's and GNU gzip's inflaters,
// deterministic, and that the policy text has no line over the limit.
func TestInitDataAnnotationEncoding(t *testing.T) {
	src, _ := testRegistry(t)
	for _, w := range emojivotoWorkloads(t) {
		t.Run(w.Name, func(t *testing.T) {
			res, err := policy.Generate(t.Context(), policy.GenerateInput{Workload: &w, Images: src})
			require.NoError(t, err)
			z, err := base64.StdEncoding.DecodeString(res.Annotations[policy.AnnotationInitData])
			require.NoError(t, err)
			assert.Equal(t, res.InitData, gunzipStrict(t, z))
			assert.Equal(t, res.InitData, gunzipCLI(t, z))
			again, err := policy.GzipInitData(res.InitData)
			require.NoError(t, err)
			assert.Equal(t, z, again, "deterministic")
			whole, err := policy.Gzip(res.InitData)
			require.NoError(t, err)
			assert.Less(t, len(z), len(whole), "the rules compressed once at the best level")
			for i, line := range strings.Split(res.Rego, "\n") {
				require.LessOrEqual(t, len(line), policy.MaxLineLength, "line %d", i+1)
			}
		})
	}
}

// TestGzipInitDataOtherDocuments: a document that does not start like a
// rendered policy is compressed as a whole, and round-trips.
func TestGzipInitDataOtherDocuments(t *testing.T) {
	for name, doc := range map[string][]byte{
		"empty":         nil,
		"other policy":  []byte("algorithm = \"sha256\"\nversion = \"0.1.0\"\n\n[data]\n\"policy.rego\" = '''\npackage agent_policy\n'''\n"),
		"prefix only":   []byte(strings.Repeat("a", 100)),
		"binary, 1 MiB": bytes.Repeat([]byte{0, 1, 2, 0xff}, 1<<18),
	} {
		z, err := policy.GzipInitData(doc)
		require.NoError(t, err, name)
		assert.Equal(t, string(doc), string(gunzipStrict(t, z)), name)
	}
}

// TestPolicyDataLines checks the line breaks of the policy data: one value
// per comma outside strings, none inside strings (commas, escaped quotes
// and backslashes in values), and the data reads back unchanged.
func TestPolicyDataLines(t *testing.T) {
	data := &policy.Data{Pod: policy.PodData{
		NameRegex:      `^a,b"c\\,d$`,
		NamespaceRegex: "^x$",
		Sysctls:        map[string]string{"k,1": `v","2`},
	}}
	rego, err := policy.RenderRego(data)
	require.NoError(t, err)
	back, err := policy.DataFromRego(rego)
	require.NoError(t, err)
	assert.Equal(t, data.Pod.NameRegex, back.Pod.NameRegex)
	assert.Equal(t, data.Pod.Sysctls, back.Pod.Sysctls)
	_, js, ok := strings.Cut(rego, "\npolicy_data := ")
	require.True(t, ok)
	for _, line := range strings.Split(strings.TrimSpace(js), "\n") {
		assert.False(t, strings.HasPrefix(line, " "), "not indented: %q", line)
	}
	assert.Contains(t, js, `"name_regex":"^a,b\"c\\\\,d$",`+"\n", "a comma in a string does not break the line")
	var v any
	require.NoError(t, json.Unmarshal([]byte(js), &v))
}
