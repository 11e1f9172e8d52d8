package cluster

import (
	"log/slog"
	"net/netip"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestClusterDNSAnswer(t *testing.T) {
	client := fake.NewClientset(
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "backend", Namespace: "apps"}, Spec: corev1.ServiceSpec{ClusterIP: "10.217.1.80"}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "headless", Namespace: "apps"}, Spec: corev1.ServiceSpec{ClusterIP: "None"}},
	)
	d := &clusterDNS{client: client, log: slog.New(slog.DiscardHandler)}
	testCases := map[string]struct {
		name   string
		qtype  dnsmessage.Type
		rcode  dnsmessage.RCode
		answer string
	}{
		"service":            {name: "backend.apps.svc.cluster.local.", qtype: dnsmessage.TypeA, answer: "10.217.1.80"},
		"upper case":         {name: "Backend.Apps.svc.cluster.local.", qtype: dnsmessage.TypeA, answer: "10.217.1.80"},
		"AAAA is empty":      {name: "backend.apps.svc.cluster.local.", qtype: dnsmessage.TypeAAAA},
		"unknown service":    {name: "other.apps.svc.cluster.local.", qtype: dnsmessage.TypeA, rcode: dnsmessage.RCodeNameError},
		"headless":           {name: "headless.apps.svc.cluster.local.", qtype: dnsmessage.TypeA, rcode: dnsmessage.RCodeNameError},
		"search list miss":   {name: "backend.apps.svc.apps.svc.cluster.local.", qtype: dnsmessage.TypeA, rcode: dnsmessage.RCodeNameError},
		"outside the domain": {name: "example.com.", qtype: dnsmessage.TypeA, rcode: dnsmessage.RCodeNameError},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 7, RecursionDesired: true})
			if err := b.StartQuestions(); err != nil {
				t.Fatal(err)
			}
			if err := b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(tc.name), Type: tc.qtype, Class: dnsmessage.ClassINET}); err != nil {
				t.Fatal(err)
			}
			q, err := b.Finish()
			if err != nil {
				t.Fatal(err)
			}
			raw, err := d.answer(q)
			if err != nil {
				t.Fatal(err)
			}
			var m dnsmessage.Message
			if err := m.Unpack(raw); err != nil {
				t.Fatal(err)
			}
			if m.ID != 7 || !m.Response || m.RCode != tc.rcode {
				t.Fatalf("header %+v, want id 7, a response, rcode %v", m.Header, tc.rcode)
			}
			if tc.answer == "" {
				if len(m.Answers) != 0 {
					t.Fatalf("answers %v, want none", m.Answers)
				}
				return
			}
			if len(m.Answers) != 1 {
				t.Fatalf("answers %v, want one", m.Answers)
			}
			a, ok := m.Answers[0].Body.(*dnsmessage.AResource)
			if !ok {
				t.Fatalf("answer %T, want A", m.Answers[0].Body)
			}
			if got := net4(a.A); got != tc.answer {
				t.Fatalf("A %s, want %s", got, tc.answer)
			}
		})
	}
}

func net4(a [4]byte) string { return netip.AddrFrom4(a).String() }
