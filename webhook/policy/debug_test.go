package policy_test

import (
	"context"
	"testing"

	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
)

// explainCreate logs which part of the CreateContainerRequest rules fails.
func explainCreate(t *testing.T, regoText string, state map[string]any, input any) {
	t.Helper()
	pre := `anno := input.OCI.Annotations; cid := data.agent_policy.bundle_id(anno); some i; c := data.agent_policy.policy_data.containers[i]; data.agent_policy.selects(c, anno); sb := data.agent_policy.sandbox_of(anno, input.OCI); `
	checks := []string{
		`cid := data.agent_policy.bundle_id(input.OCI.Annotations)`,
		`anno := input.OCI.Annotations; some i; c := data.agent_policy.policy_data.containers[i]; data.agent_policy.selects(c, anno)`,
		`sb := data.agent_policy.sandbox_of(input.OCI.Annotations, input.OCI)`,
		pre + `data.agent_policy.sandbox_consistent(sb)`,
		pre + `data.agent_policy.annotations_ok(anno)`,
		pre + `p := input.OCI.Process; object.get(p, "Args", []) == c.args`,
		pre + `p := input.OCI.Process; object.get(p, "Cwd", "") == c.cwd`,
		pre + `p := input.OCI.Process; object.get(p, "NoNewPrivileges", false) == c.no_new_privileges`,
		pre + `p := input.OCI.Process; object.get(p, "ApparmorProfile", "") in data.agent_policy.policy_data.common.apparmor_profiles`,
		pre + `data.agent_policy.user_ok(c, object.get(input.OCI.Process, "User", {}))`,
		pre + `data.agent_policy.caps_ok(c, object.get(input.OCI.Process, "Capabilities", {}))`,
		pre + `data.agent_policy.env_ok(c, object.get(input.OCI.Process, "Env", []), sb)`,
		pre + `data.agent_policy.hostname_ok(c, input.OCI, sb)`,
		pre + `data.agent_policy.root_ok(c, input.OCI, cid)`,
		pre + `data.agent_policy.mounts_ok(c, object.get(input.OCI, "Mounts", []), cid)`,
		pre + `data.agent_policy.storages_ok(c, object.get(input, "storages", []), cid)`,
		pre + `data.agent_policy.linux_ok(c, object.get(input.OCI, "Linux", {}))`,
		pre + `data.agent_policy.namespaces_ok(object.get(object.get(input.OCI, "Linux", {}), "Namespaces", []))`,
		pre + `data.agent_policy.paths_ok(c, object.get(input.OCI, "Linux", {}))`,
		pre + `data.agent_policy.hooks_ok(object.get(input.OCI, "Hooks", null))`,
		pre + `m := object.get(input.OCI, "Mounts", [])[_]; not data.agent_policy.mount_allowed(c, m, cid)`,
		pre + `e := object.get(input.OCI.Process, "Env", [])[_]; not data.agent_policy.env_allowed(c, e, sb)`,
		pre + `s := c.env[_]; not data.agent_policy.env_present(s, object.get(input.OCI.Process, "Env", []), sb)`,
	}
	for _, q := range checks {
		r := rego.New(rego.Module("policy.rego", regoText), rego.Query(q), rego.Store(inmem.NewFromObject(state)), rego.Input(input))
		rs, err := r.Eval(context.Background())
		if err != nil {
			t.Logf("  check error %q: %v", q, err)
			continue
		}
		if len(rs) == 0 {
			t.Logf("  FAILS: %s", q[min(len(q), len(pre)):])
		} else if len(q) > 20 && (contains(q, "not data.agent_policy")) {
			for _, r := range rs {
				t.Logf("  offending: %v", r.Bindings["m"])
				t.Logf("  offending: %v %v", r.Bindings["e"], r.Bindings["s"])
			}
		}
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
