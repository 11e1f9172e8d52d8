package cluster

import (
	"log/slog"
	"net/netip"
	"slices"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
)

func TestClusterDNSAnswer(t *testing.T) {
	client := fake.NewClientset(
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "backend", Namespace: "apps"}, Spec: corev1.ServiceSpec{ClusterIP: "10.217.1.80"}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "headless", Namespace: "apps"}, Spec: corev1.ServiceSpec{ClusterIP: "None"}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "peers", Namespace: "apps"}, Spec: corev1.ServiceSpec{ClusterIP: "None"}},
		&discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Name: "peers-abc", Namespace: "apps", Labels: map[string]string{discoveryv1.LabelServiceName: "peers"}},
			Endpoints: []discoveryv1.Endpoint{
				{Addresses: []string{"10.217.0.5"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}},
				{Addresses: []string{"10.217.0.6"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false)}},
				{Addresses: []string{"10.217.0.7"}},
			},
		},
	)
	d := &clusterDNS{client: client, log: slog.New(slog.DiscardHandler)}
	testCases := map[string]struct {
		name   string
		qtype  dnsmessage.Type
		rcode  dnsmessage.RCode
		answer []string
	}{
		"service":                       {name: "backend.apps.svc.cluster.local.", qtype: dnsmessage.TypeA, answer: []string{"10.217.1.80"}},
		"upper case":                    {name: "Backend.Apps.svc.cluster.local.", qtype: dnsmessage.TypeA, answer: []string{"10.217.1.80"}},
		"AAAA is empty":                 {name: "backend.apps.svc.cluster.local.", qtype: dnsmessage.TypeAAAA},
		"unknown service":               {name: "other.apps.svc.cluster.local.", qtype: dnsmessage.TypeA, rcode: dnsmessage.RCodeNameError},
		"headless, no ready endpoints":  {name: "headless.apps.svc.cluster.local.", qtype: dnsmessage.TypeA, rcode: dnsmessage.RCodeNameError},
		"headless, the ready endpoints": {name: "peers.apps.svc.cluster.local.", qtype: dnsmessage.TypeA, answer: []string{"10.217.0.5", "10.217.0.7"}},
		"search list miss":              {name: "backend.apps.svc.apps.svc.cluster.local.", qtype: dnsmessage.TypeA, rcode: dnsmessage.RCodeNameError},
		"outside the domain":            {name: "example.com.", qtype: dnsmessage.TypeA, rcode: dnsmessage.RCodeNameError},
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
			var got []string
			for _, a := range m.Answers {
				r, ok := a.Body.(*dnsmessage.AResource)
				if !ok {
					t.Fatalf("answer %T, want A", a.Body)
				}
				got = append(got, net4(r.A))
			}
			if !slices.Equal(got, tc.answer) {
				t.Fatalf("answers %v, want %v", got, tc.answer)
			}
		})
	}
}

func net4(a [4]byte) string { return netip.AddrFrom4(a).String() }
