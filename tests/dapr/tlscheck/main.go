// Command tlscheck checks certificates the way Go's crypto/tls and crypto/x509 do, for the
// sentry project's control-plane tests (tests/e2e/control_plane_test.ts):
//
//	tlscheck -ca anchors.pem -addr 127.0.0.1:4000 -server-name dapr-sidecar-injector.dapr-system.svc
//	    connects with crypto/tls, trusting only the anchors, and lets crypto/tls verify the served
//	    chain for the server name (as the Kubernetes API server does when it calls a webhook);
//	tlscheck -ca anchors.pem -addr 127.0.0.1:50005 -spiffe-id spiffe://cluster.local/ns/dapr-system/dapr-placement
//	    for servers whose certificates name no DNS names (Dapr's SPIFFE mTLS): verifies the chain
//	    with crypto/x509 (any extended key usage) and checks the URI SAN;
//	tlscheck -ca anchors.pem -chain cert.pem -dns name [-dns name ...]
//	    verifies a PEM chain on disk for each DNS name with crypto/x509 (server auth);
//
// It prints one JSON object (what was verified: subject URIs, DNS names, whether the server asked
// for a client certificate) and exits 0, or prints the error and exits 1.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

type names []string

func (n *names) String() string     { return strings.Join(*n, ",") }
func (n *names) Set(v string) error { *n = append(*n, v); return nil }

type report struct {
	Addr                   string   `json:"addr,omitempty"`
	ServerName             string   `json:"serverName,omitempty"`
	VerifiedDNSNames       []string `json:"verifiedDnsNames,omitempty"`
	VerifiedSpiffeID       string   `json:"verifiedSpiffeId,omitempty"`
	DNSNames               []string `json:"dnsNames"`
	URIs                   []string `json:"uris"`
	Issuer                 string   `json:"issuer"`
	KeyAlgorithm           string   `json:"keyAlgorithm"`
	NotAfter               string   `json:"notAfter"`
	TLSVersion             string   `json:"tlsVersion,omitempty"`
	ClientCertRequested    bool     `json:"clientCertRequested"`
	ClientCertAcceptableCA int      `json:"clientCertAcceptableCAs"`
}

func main() {
	caFile := flag.String("ca", "", "PEM trust anchors (required)")
	addr := flag.String("addr", "", "host:port to connect to with crypto/tls")
	serverName := flag.String("server-name", "", "with -addr: the name crypto/tls verifies the served certificate for")
	spiffeID := flag.String("spiffe-id", "", "with -addr: the URI SAN the served certificate must carry (chain verified by crypto/x509)")
	chainFile := flag.String("chain", "", "a PEM chain (leaf first) to verify for each -dns name")
	var dns names
	flag.Var(&dns, "dns", "with -chain: a DNS name the leaf must verify for (repeatable)")
	flag.Parse()

	out, err := run(*caFile, *addr, *serverName, *spiffeID, *chainFile, dns)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tlscheck:", err)
		os.Exit(1)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	_ = enc.Encode(out)
}

func run(caFile, addr, serverName, spiffeID, chainFile string, dns []string) (*report, error) {
	if caFile == "" {
		return nil, errors.New("-ca is required")
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
	}
	switch {
	case chainFile != "":
		return verifyFile(roots, chainFile, dns)
	case addr != "" && serverName != "":
		return dialForName(roots, addr, serverName)
	case addr != "" && spiffeID != "":
		return dialForSpiffeID(roots, addr, spiffeID)
	default:
		return nil, errors.New("give -chain with -dns, or -addr with -server-name or -spiffe-id")
	}
}

func describe(leaf *x509.Certificate) *report {
	r := &report{DNSNames: leaf.DNSNames, URIs: []string{}, Issuer: leaf.Issuer.String(),
		KeyAlgorithm: leaf.PublicKeyAlgorithm.String(),
		NotAfter:     leaf.NotAfter.UTC().Format(time.RFC3339)}
	if r.DNSNames == nil {
		r.DNSNames = []string{}
	}
	for _, u := range leaf.URIs {
		r.URIs = append(r.URIs, u.String())
	}
	return r
}

func verifyFile(roots *x509.CertPool, chainFile string, dns []string) (*report, error) {
	if len(dns) == 0 {
		return nil, errors.New("-chain needs at least one -dns name")
	}
	data, err := os.ReadFile(chainFile)
	if err != nil {
		return nil, err
	}
	var certs []*x509.Certificate
	for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s holds no PEM certificate", chainFile)
	}
	intermediates := x509.NewCertPool()
	for _, cert := range certs[1:] {
		intermediates.AddCert(cert)
	}
	for _, name := range dns {
		if _, err := certs[0].Verify(x509.VerifyOptions{
			DNSName: name, Roots: roots, Intermediates: intermediates,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}); err != nil {
			return nil, fmt.Errorf("%s for %q: %w", chainFile, name, err)
		}
	}
	r := describe(certs[0])
	r.VerifiedDNSNames = dns
	return r, nil
}

// dialForName lets crypto/tls do the whole verification (chain to the anchors, server name).
func dialForName(roots *x509.CertPool, addr, serverName string) (*report, error) {
	requested := false
	acceptable := 0
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{
		RootCAs:    roots,
		ServerName: serverName,
		MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(info *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			requested, acceptable = true, len(info.AcceptableCAs)
			return &tls.Certificate{}, nil
		},
	})
	if err != nil {
		return nil, fmt.Errorf("TLS handshake with %s for server name %q: %w", addr, serverName, err)
	}
	defer conn.Close()
	state := conn.ConnectionState()
	r := describe(state.PeerCertificates[0])
	r.Addr, r.ServerName, r.VerifiedDNSNames = addr, serverName, []string{serverName}
	r.TLSVersion = tls.VersionName(state.Version)
	r.ClientCertRequested, r.ClientCertAcceptableCA = requested, acceptable
	return r, nil
}

// dialForSpiffeID verifies the chain with crypto/x509 and the URI SAN itself, as SPIFFE peers do
// (the certificates carry no DNS name for crypto/tls to check).
func dialForSpiffeID(roots *x509.CertPool, addr, spiffeID string) (*report, error) {
	requested := false
	acceptable := 0
	verify := func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
		var certs []*x509.Certificate
		for _, raw := range rawCerts {
			cert, err := x509.ParseCertificate(raw)
			if err != nil {
				return err
			}
			certs = append(certs, cert)
		}
		if len(certs) == 0 {
			return errors.New("no certificate served")
		}
		intermediates := x509.NewCertPool()
		for _, cert := range certs[1:] {
			intermediates.AddCert(cert)
		}
		if _, err := certs[0].Verify(x509.VerifyOptions{
			Roots: roots, Intermediates: intermediates,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		}); err != nil {
			return err
		}
		for _, uri := range certs[0].URIs {
			if uri.String() == spiffeID {
				return nil
			}
		}
		return fmt.Errorf("served certificate's URIs %v do not include %s", certs[0].URIs, spiffeID)
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{
		InsecureSkipVerify:    true, // replaced by verify above, which checks chain and URI SAN
		VerifyPeerCertificate: verify,
		MinVersion:            tls.VersionTLS12,
		GetClientCertificate: func(info *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			requested, acceptable = true, len(info.AcceptableCAs)
			return &tls.Certificate{}, nil
		},
	})
	if err != nil {
		return nil, fmt.Errorf("TLS handshake with %s for %s: %w", addr, spiffeID, err)
	}
	defer conn.Close()
	state := conn.ConnectionState()
	r := describe(state.PeerCertificates[0])
	r.Addr, r.VerifiedSpiffeID = addr, spiffeID
	r.TLSVersion = tls.VersionName(state.Version)
	r.ClientCertRequested, r.ClientCertAcceptableCA = requested, acceptable
	return r, nil
}
