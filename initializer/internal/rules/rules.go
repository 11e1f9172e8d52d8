// Package rules computes and applies the nftables rule set that redirects a
// pod's inbound TCP connections to the mesh proxy's ingress listener.
//
// The rule set is one table, inet contrast_mesh, with one NAT chain on the
// prerouting hook:
//
//	table inet contrast_mesh {
//		chain prerouting {
//			type nat hook prerouting priority dstnat; policy accept;
//			iifname "lo" return
//			tcp dport <each plain (#true) ingress port> return
//			tcp dport <admin port> return
//			meta l4proto tcp redirect to :<ingress port>
//		}
//	}
//
// Only connections that arrive from outside the pod pass the prerouting hook:
// connections the pod opens itself, the proxy's forwards to 127.0.0.1 and its
// egress dials included, are NATed (or not) on the output hook, where this
// table has no chain. So the proxy's own traffic is excluded by construction,
// without an owner match and without a fixed uid.
//
// Apply replaces the table in one netlink transaction, so a restarted proxy
// re-applies the same rules idempotently, and there is never a moment with a
// half-built chain. The proxy never removes the table: when it is gone, the
// redirected ports refuse connections (fail closed) rather than reach the
// application in the clear.
package rules

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/contrast-cc/contrast/initializer/meshconfig"
)

// Names of the table and chain the proxy owns.
const (
	TableName = "contrast_mesh"
	ChainName = "prerouting"
)

// Kind is what a rule does.
type Kind int

const (
	// SkipLoopback returns (leaves untouched) packets that arrive on lo.
	SkipLoopback Kind = iota + 1
	// SkipPort returns TCP packets to Port: plain ingress ports and the
	// admin port.
	SkipPort
	// Redirect redirects every other TCP connection to Port, the proxy's
	// ingress listener.
	Redirect
)

// Rule is one rule of the chain.
type Rule struct {
	Kind Kind
	// Port is the destination port (SkipPort) or the redirect target
	// (Redirect).
	Port uint16
	// Comment says why the rule exists; it is stored with the rule.
	Comment string
}

// Set is the rule set of one pod.
type Set struct {
	Table string
	Chain string
	Rules []Rule
}

// ErrPortConflict is returned when the ingress listener port is also a port
// the configuration names.
var ErrPortConflict = errors.New("port conflict")

// Compute returns the rule set for cfg, redirecting to ingressPort. The
// result depends only on its arguments, in the order of cfg's entries.
func Compute(cfg *meshconfig.Config, ingressPort uint16) (*Set, error) {
	if ingressPort == 0 {
		return nil, errors.New("ingress listener port must not be 0")
	}
	if cfg.Disabled {
		return nil, errors.New("the service mesh is disabled: no rules")
	}
	s := &Set{Table: TableName, Chain: ChainName}
	s.Rules = append(s.Rules, Rule{Kind: SkipLoopback, Comment: "loopback: never redirected"})
	for _, in := range cfg.Ingress {
		if in.Port == ingressPort {
			return nil, fmt.Errorf("%w: ingress entry %q uses port %d, the proxy's ingress listener port", ErrPortConflict, in.String(), ingressPort)
		}
		if in.Mode == meshconfig.IngressPlain {
			s.Rules = append(s.Rules, Rule{Kind: SkipPort, Port: in.Port, Comment: "plain ingress " + in.Name})
		}
	}
	if cfg.AdminPort != 0 {
		if cfg.AdminPort == ingressPort {
			return nil, fmt.Errorf("%w: admin port %d is the proxy's ingress listener port", ErrPortConflict, ingressPort)
		}
		s.Rules = append(s.Rules, Rule{Kind: SkipPort, Port: cfg.AdminPort, Comment: "mesh proxy admin port"})
	}
	if len(cfg.Probes) > 0 {
		if ingressPort == meshconfig.ProbePort {
			return nil, fmt.Errorf("%w: port %d is the proxy's probe port and its ingress listener port", ErrPortConflict, ingressPort)
		}
		s.Rules = append(s.Rules, Rule{Kind: SkipPort, Port: meshconfig.ProbePort, Comment: "mesh proxy probe port (kubelet probes)"})
	}
	s.Rules = append(s.Rules, Rule{Kind: Redirect, Port: ingressPort, Comment: "inbound TCP to the mesh proxy"})
	return s, nil
}

// SkippedPorts returns the ports the rule set leaves untouched.
func (s *Set) SkippedPorts() []uint16 {
	var ports []uint16
	for _, r := range s.Rules {
		if r.Kind == SkipPort {
			ports = append(ports, r.Port)
		}
	}
	return ports
}

// String renders the rule set in nft syntax (nft -f accepts it), for logs
// and review.
func (s *Set) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n\tchain %s {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n", s.Table, s.Chain)
	for _, r := range s.Rules {
		fmt.Fprintf(&b, "\t\t%s comment %q\n", r.nft(), r.Comment)
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

func (r Rule) nft() string {
	switch r.Kind {
	case SkipLoopback:
		return `iifname "lo" return`
	case SkipPort:
		return fmt.Sprintf("tcp dport %d return", r.Port)
	case Redirect:
		return fmt.Sprintf("meta l4proto tcp redirect to :%d", r.Port)
	default:
		return "invalid"
	}
}

// Exprs returns the nftables expressions of r, as nft itself compiles the
// rule.
func (r Rule) Exprs() ([]expr.Any, error) {
	tcp := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
	}
	switch r.Kind {
	case SkipLoopback:
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname("lo")},
			&expr.Verdict{Kind: expr.VerdictReturn},
		}, nil
	case SkipPort:
		return append(tcp,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(r.Port)},
			&expr.Verdict{Kind: expr.VerdictReturn},
		), nil
	case Redirect:
		return append(tcp,
			&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(r.Port)},
			// As nft compiles "redirect to :port": the port range is
			// register 1 to register 1, and the flag says it is given.
			&expr.Redir{RegisterProtoMin: 1, RegisterProtoMax: 1, Flags: unix.NF_NAT_RANGE_PROTO_SPECIFIED},
		), nil
	default:
		return nil, fmt.Errorf("rule %q: unknown kind %d", r.Comment, r.Kind)
	}
}

// ifname returns name NUL-padded to IFNAMSIZ, as the kernel compares it.
func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func (s *Set) nfTable() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: s.Table}
}

func (s *Set) nfChain(t *nftables.Table) *nftables.Chain {
	policy := nftables.ChainPolicyAccept
	return &nftables.Chain{
		Name:     s.Chain,
		Table:    t,
		Type:     nftables.ChainTypeNAT,
		Hooknum:  nftables.ChainHookPrerouting,
		Priority: nftables.ChainPriorityNATDest,
		Policy:   &policy,
	}
}

// Apply replaces the set's table in the network namespace of conn with the
// set, in one transaction: the table is created (a no-op when it exists),
// deleted with everything in it, and built again.
func (s *Set) Apply(conn *nftables.Conn) error {
	t := s.nfTable()
	conn.AddTable(t)
	conn.DelTable(t)
	conn.AddTable(t)
	c := conn.AddChain(s.nfChain(t))
	for _, r := range s.Rules {
		exprs, err := r.Exprs()
		if err != nil {
			return err
		}
		conn.AddRule(&nftables.Rule{
			Table:    t,
			Chain:    c,
			Exprs:    exprs,
			UserData: userdata.AppendString(nil, userdata.TypeComment, r.Comment),
		})
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("applying nftables table inet %s: %w", s.Table, err)
	}
	return nil
}

// Installed is a rule as read back from the kernel.
type Installed struct {
	Exprs   []expr.Any
	Comment string
}

// Read returns the rules of the set's chain as installed in the network
// namespace of conn.
func (s *Set) Read(conn *nftables.Conn) ([]Installed, error) {
	t := s.nfTable()
	rs, err := conn.GetRules(t, s.nfChain(t))
	if err != nil {
		return nil, fmt.Errorf("reading nftables chain inet %s %s: %w", s.Table, s.Chain, err)
	}
	out := make([]Installed, 0, len(rs))
	for _, r := range rs {
		c, _ := userdata.GetString(r.UserData, userdata.TypeComment)
		out = append(out, Installed{Exprs: r.Exprs, Comment: c})
	}
	return out, nil
}

// Matches reports whether installed equals the set's rules, expression by
// expression.
func (s *Set) Matches(installed []Installed) (bool, error) {
	if len(installed) != len(s.Rules) {
		return false, nil
	}
	for i, r := range s.Rules {
		want, err := r.Exprs()
		if err != nil {
			return false, err
		}
		if installed[i].Comment != r.Comment || !reflect.DeepEqual(want, installed[i].Exprs) {
			return false, nil
		}
	}
	return true, nil
}

// Install applies s in the network namespace of the calling process (it
// needs CAP_NET_ADMIN there).
func Install(s *Set) error {
	conn, err := nftables.New()
	if err != nil {
		return fmt.Errorf("opening nftables netlink connection: %w", err)
	}
	return s.Apply(conn)
}
