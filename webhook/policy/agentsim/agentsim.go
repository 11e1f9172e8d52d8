// Package agentsim evaluates a Kata agent policy the way the Kata agent does:
// it queries data.agent_policy.<Request> for every request, accepts a boolean
// or an {"allowed", "ops"} object, and applies the ops (JSON patch) to the
// policy state after an allowed request. It uses the OPA Go library, so tests
// and the runc-based test node can check policies without a Kata guest.
package agentsim

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
)

// Agent holds one policy and its state.
type Agent struct {
	mu       sync.Mutex
	compiler *ast.Compiler
	state    map[string]any
}

// New compiles policy (a complete Rego module).
func New(policy string) (*Agent, error) {
	mod, err := ast.ParseModuleWithOpts("policy.rego", policy, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		return nil, fmt.Errorf("parsing policy: %w", err)
	}
	c := ast.NewCompiler()
	c.Compile(map[string]*ast.Module{"policy.rego": mod})
	if c.Failed() {
		return nil, fmt.Errorf("compiling policy: %w", c.Errors)
	}
	return &Agent{compiler: c, state: map[string]any{"pstate": map[string]any{}}}, nil
}

// Decision is the outcome of one request.
type Decision struct {
	Allowed bool
	// Ops are the state operations the policy returned (applied if allowed).
	Ops []any
}

// ErrEvaluation is returned when the policy yields no usable decision; the
// agent treats it as a denial.
var ErrEvaluation = errors.New("policy evaluation failed")

// Allow evaluates data.agent_policy.<endpoint> for input (a JSON-compatible
// value, e.g. from json.Unmarshal) and updates the state.
func (a *Agent) Allow(ctx context.Context, endpoint string, input any) (Decision, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := rego.New(
		rego.Compiler(a.compiler),
		rego.Query("data.agent_policy."+endpoint),
		rego.Store(inmem.NewFromObject(a.state)),
		rego.Input(input),
		rego.StrictBuiltinErrors(false),
	)
	rs, err := r.Eval(ctx)
	if err != nil {
		return Decision{}, fmt.Errorf("%w: %s: %w", ErrEvaluation, endpoint, err)
	}
	if len(rs) != 1 || len(rs[0].Expressions) != 1 {
		return Decision{}, fmt.Errorf("%w: %s: %d results", ErrEvaluation, endpoint, len(rs))
	}
	switch v := rs[0].Expressions[0].Value.(type) {
	case bool:
		return Decision{Allowed: v}, nil
	case map[string]any:
		allowed, ok := v["allowed"].(bool)
		if !ok {
			return Decision{}, fmt.Errorf("%w: %s: result without allowed", ErrEvaluation, endpoint)
		}
		d := Decision{Allowed: allowed}
		if ops, ok := v["ops"].([]any); ok {
			d.Ops = ops
		}
		if allowed {
			for _, op := range d.Ops {
				if err := applyOp(a.state, op); err != nil {
					return Decision{}, fmt.Errorf("%w: %s: applying state op: %w", ErrEvaluation, endpoint, err)
				}
			}
		}
		return d, nil
	default:
		return Decision{}, fmt.Errorf("%w: %s: unexpected result type %T", ErrEvaluation, endpoint, v)
	}
}

// State returns the current policy state (do not modify).
func (a *Agent) State() map[string]any {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.state
}

// applyOp applies one JSON patch operation (add, replace, remove) to doc.
func applyOp(doc map[string]any, raw any) error {
	op, ok := raw.(map[string]any)
	if !ok {
		return errors.New("operation is not an object")
	}
	kind, _ := op["op"].(string)
	path, _ := op["path"].(string)
	if !strings.HasPrefix(path, "/") {
		return fmt.Errorf("bad path %q", path)
	}
	parts := strings.Split(path[1:], "/")
	for i, p := range parts {
		parts[i] = strings.ReplaceAll(strings.ReplaceAll(p, "~1", "/"), "~0", "~")
	}
	parent := doc
	for _, p := range parts[:len(parts)-1] {
		next, ok := parent[p].(map[string]any)
		if !ok {
			return fmt.Errorf("path %q: %q is not an object", path, p)
		}
		parent = next
	}
	last := parts[len(parts)-1]
	switch kind {
	case "add", "replace":
		if kind == "replace" {
			if _, ok := parent[last]; !ok {
				return fmt.Errorf("replace: %q does not exist", path)
			}
		}
		parent[last] = normalize(op["value"])
	case "remove":
		if _, ok := parent[last]; !ok {
			return fmt.Errorf("remove: %q does not exist", path)
		}
		delete(parent, last)
	default:
		return fmt.Errorf("unsupported op %q", kind)
	}
	return nil
}

// normalize deep-copies a value so that later state changes do not alias
// the evaluation result.
func normalize(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, x := range t {
			out[k] = normalize(x)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, x := range t {
			out[i] = normalize(x)
		}
		return out
	default:
		return v
	}
}

// WithoutChecks returns policy with each named check made to always hold: a
// check is a rule of package agent_policy whose value is true (a boolean
// rule such as `CreateSandboxRequest if {...}`, a default-false request rule,
// or a boolean function such as `mounts_ok(c, mounts, cid) if {...}`), and
// an unconditional definition is appended for it.
//
// Tests use it to show which check denied a request: the request is denied
// by the policy and allowed by WithoutChecks(policy, check). A malformed
// request, or a rule broken elsewhere, is then still denied and the test
// fails, where a bare "denied" assertion would pass.
func WithoutChecks(policy string, checks ...string) (string, error) {
	mod, err := ast.ParseModuleWithOpts("policy.rego", policy, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		return "", fmt.Errorf("parsing policy: %w", err)
	}
	var b strings.Builder
	b.WriteString(policy)
	b.WriteString("\n# agentsim.WithoutChecks\n")
	for _, check := range checks {
		arity, err := checkArity(mod, check)
		if err != nil {
			return "", err
		}
		if arity == 0 {
			fmt.Fprintf(&b, "%s if true\n", check)
			continue
		}
		fmt.Fprintf(&b, "%s(%s) if true\n", check, strings.TrimSuffix(strings.Repeat("_, ", arity), ", "))
	}
	return b.String(), nil
}

// checkArity returns the number of arguments of the boolean check name, or
// an error if name is not a boolean check of mod.
func checkArity(mod *ast.Module, name string) (int, error) {
	arity, found := -1, false
	for _, r := range mod.Rules {
		if r.Head.Name.String() != name && r.Head.Ref().String() != name {
			continue
		}
		found = true
		if r.Default {
			if !r.Head.Value.Equal(ast.BooleanTerm(false)) {
				return 0, fmt.Errorf("check %q: default value %v is not false", name, r.Head.Value)
			}
		} else if r.Head.Value != nil && !r.Head.Value.Equal(ast.BooleanTerm(true)) {
			return 0, fmt.Errorf("check %q: value %v is not a boolean check", name, r.Head.Value)
		}
		n := len(r.Head.Args)
		if arity >= 0 && n != arity && !r.Default {
			return 0, fmt.Errorf("check %q: definitions with %d and %d arguments", name, arity, n)
		}
		if !r.Default {
			arity = n
		}
	}
	switch {
	case !found:
		return 0, fmt.Errorf("no check %q in the policy", name)
	case arity < 0:
		arity = 0
	}
	return arity, nil
}
