package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
)

// ClusterDomain is the DNS domain of the real node's Services.
const ClusterDomain = "cluster.local"

// clusterDNS is the cluster DNS of the real node, in place of CoreDNS: it
// answers the pods' A queries for <service>.<namespace>.svc.cluster.local
// with the Service's ClusterIP, or for a headless Service with the
// addresses of its ready endpoints (as CoreDNS does), read from the API
// server, and nothing else (NXDOMAIN; AAAA gets an empty answer, as for an
// IPv4-only Service). UDP only: the answers of a test cluster fit. The
// kubelet points pods at it (clusterDNS), with the usual search list.
type clusterDNS struct {
	conn   *net.UDPConn
	client kubernetes.Interface
	log    *slog.Logger
	wg     sync.WaitGroup
}

// startClusterDNS serves on addr:53.
func startClusterDNS(addr string, client kubernetes.Interface, log *slog.Logger) (*clusterDNS, error) {
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(addr), 53)))
	if err != nil {
		return nil, fmt.Errorf("cluster DNS on %s:53: %w", addr, err)
	}
	d := &clusterDNS{conn: conn, client: client, log: log}
	d.wg.Add(1)
	go d.serve()
	return d, nil
}

func (d *clusterDNS) serve() {
	defer d.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, from, err := d.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				d.log.Warn("cluster DNS stopped", "error", err)
			}
			return
		}
		resp, err := d.answer(buf[:n])
		if err != nil {
			d.log.Debug("cluster DNS: bad query", "from", from.String(), "error", err)
			continue
		}
		_, _ = d.conn.WriteToUDPAddrPort(resp, from)
	}
}

// answer builds the response to one query message.
func (d *clusterDNS) answer(query []byte) ([]byte, error) {
	var p dnsmessage.Parser
	hdr, err := p.Start(query)
	if err != nil {
		return nil, err
	}
	q, err := p.Question()
	if err != nil {
		return nil, err
	}
	resp := dnsmessage.Header{ID: hdr.ID, Response: true, Authoritative: true, RecursionDesired: hdr.RecursionDesired, RCode: dnsmessage.RCodeSuccess}
	var ips []netip.Addr
	name := strings.ToLower(strings.TrimSuffix(q.Name.String(), "."))
	svc, ns, ok := serviceName(name)
	switch {
	case !ok || q.Class != dnsmessage.ClassINET:
		resp.RCode = dnsmessage.RCodeNameError
	default:
		ips, err = d.lookup(ns, svc)
		if err != nil {
			resp.RCode = dnsmessage.RCodeNameError
			if !apierrors.IsNotFound(err) {
				resp.RCode = dnsmessage.RCodeServerFailure
				d.log.Warn("cluster DNS: lookup", "name", name, "error", err)
			}
		}
	}
	b := dnsmessage.NewBuilder(nil, resp)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(q); err != nil {
		return nil, err
	}
	if resp.RCode == dnsmessage.RCodeSuccess && q.Type == dnsmessage.TypeA {
		if err := b.StartAnswers(); err != nil {
			return nil, err
		}
		for _, ip := range ips {
			if !ip.Is4() {
				continue
			}
			if err := b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 5}, dnsmessage.AResource{A: ip.As4()}); err != nil {
				return nil, err
			}
		}
	}
	return b.Finish()
}

// serviceName splits <service>.<namespace>.svc.cluster.local.
func serviceName(name string) (svc, ns string, ok bool) {
	rest, found := strings.CutSuffix(name, ".svc."+ClusterDomain)
	if !found {
		return "", "", false
	}
	svc, ns, found = strings.Cut(rest, ".")
	if !found || svc == "" || ns == "" || strings.Contains(ns, ".") {
		return "", "", false
	}
	return svc, ns, true
}

// lookup returns the Service's ClusterIP, or the ready endpoint addresses
// of a headless Service (none: NotFound, so the answer is NXDOMAIN as for a
// Service without ready pods in CoreDNS).
func (d *clusterDNS) lookup(ns, svc string) ([]netip.Addr, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := d.client.CoreV1().Services(ns).Get(ctx, svc, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	notFound := apierrors.NewNotFound(schema.GroupResource{Resource: "services"}, svc)
	if s.Spec.ClusterIP != corev1.ClusterIPNone {
		ip, err := netip.ParseAddr(s.Spec.ClusterIP)
		if err != nil {
			return nil, notFound
		}
		return []netip.Addr{ip}, nil
	}
	eps, err := d.client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + svc})
	if err != nil {
		return nil, err
	}
	var ips []netip.Addr
	for _, sl := range eps.Items {
		for _, ep := range sl.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			for _, a := range ep.Addresses {
				if ip, err := netip.ParseAddr(a); err == nil && !slices.Contains(ips, ip) {
					ips = append(ips, ip)
				}
			}
		}
	}
	if len(ips) == 0 {
		return nil, notFound
	}
	return ips, nil
}

// close stops the server.
func (d *clusterDNS) close() {
	_ = d.conn.Close()
	d.wg.Wait()
}
