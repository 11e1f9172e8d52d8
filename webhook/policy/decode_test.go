package policy_test

import (
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/webhook/policy"
)

func TestDecodeWorkloads(t *testing.T) {
	cases := map[string]struct {
		in      string
		want    []string // kind/name
		wantErr string   // a part of the error, when it must fail
	}{
		"multi doc with other kinds": {
			in:   "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n---\n# comment only\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {template: {spec: {containers: [{name: c, image: i}]}}}\n",
			want: []string{"Deployment/d"},
		},
		"list": {
			in:   `{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"}},{"apiVersion":"batch/v1","kind":"CronJob","metadata":{"name":"c"}}]}`,
			want: []string{"Pod/a", "CronJob/c"},
		},
		"generateName pod": {
			in:   "apiVersion: v1\nkind: Pod\nmetadata: {generateName: x-}\nspec: {containers: [{name: c, image: i}]}\n",
			want: []string{"Pod/x-"},
		},
		"unknown field":  {in: "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containerz: []}\n", wantErr: `unknown field "containerz"`},
		"no kind":        {in: "apiVersion: v1\nmetadata: {name: a}\n", wantErr: "no kind"},
		"no name":        {in: "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {}\n", wantErr: "has no name"},
		"rc without tpl": {in: "apiVersion: v1\nkind: ReplicationController\nmetadata: {name: r}\n", wantErr: "without template"},
		// The API server refuses a number in a string field (kubectl sends
		// YAML's own types), so generate must not compute a policy for it.
		"number in a string field": {
			in:      "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {template: {spec: {containers: [{name: c, image: i, command: [openssl, -4]}]}}}\n",
			wantErr: "cannot unmarshal number into Go struct field Container.spec.template.spec.containers.command of type string",
		},
		"duplicate key": {in: "apiVersion: v1\nkind: Pod\nmetadata: {name: a, name: b}\n", wantErr: `"name" already set`},
		"empty":         {in: ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			ws, err := policy.DecodeWorkloads([]byte(tc.in))
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			var got []string
			for _, w := range ws {
				got = append(got, w.Kind+"/"+w.Name)
			}
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestPodNamePatterns(t *testing.T) {
	src, _ := testRegistry(t)
	ws := readWorkloads(t, "testdata/workloads.yaml")
	ws = append(ws, emojivotoWorkloads(t)...)
	cases := map[string]struct{ match, noMatch []string }{
		"web":      {[]string{"web-5f8d7c9b4d-x2k9z", "web-7b9c-bcdfg"}, []string{"web-x2k9z", "webx-5f8d7c9b4d-x2k9z", "web-5f8d7c9b4d-x2k9z1", "web-5f8d7c9b4d-aaaaa"}},
		"db":       {[]string{"db-0", "db-12"}, []string{"db-01", "db-x", "db"}},
		"agent":    {[]string{"agent-h8v2q"}, []string{"agent-h8v2", "agent-0"}},
		"migrate":  {[]string{"migrate-q7w4z", "migrate-3-q7w4z"}, []string{"migrate-29461740-q7w4z-x", "migrate"}},
		"backup":   {[]string{"backup-29461740-q7w4z"}, []string{"backup-q7w4z", "backup-12-q7w4z"}},
		"sidecars": {[]string{"sidecars"}, []string{"sidecars-x2k9z"}},
	}
	for _, w := range ws {
		tc, ok := cases[w.Name]
		if !ok {
			continue
		}
		t.Run(w.Name, func(t *testing.T) {
			res, err := policy.Generate(t.Context(), policy.GenerateInput{Workload: &w, Images: src})
			require.NoError(t, err)
			re := regexp.MustCompile(res.Data.Pod.NameRegex)
			for _, n := range tc.match {
				assert.True(t, re.MatchString(n), "%s should match %s", n, re)
			}
			for _, n := range tc.noMatch {
				assert.False(t, re.MatchString(n), "%s should not match %s", n, re)
			}
		})
	}
}
