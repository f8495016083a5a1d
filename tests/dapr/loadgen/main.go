// Command loadgen puts one and the same client load on a certificate authority, so that the
// benchmark (bench/run.ts) can compare servers under identical cost on the client side: our
// sentry and Dapr's own sentry over gRPC (dapr.proto.sentry.v1.CA/SignCertificate, grpc-go and
// Dapr's published proto package, TLS), and CFSSL's JSON sign endpoint over HTTP/1.1 as a
// reference.
//
// Before it measures, it generates a pool of CSRs (so that key generation is never measured),
// opens the connections and makes one checked call on each. Then `-callers` goroutines send the
// pooled CSRs back to back, round-robin over `-conns` long-lived connections: `-warmup` of
// unmeasured load, then `-duration` of measurement (or until `-count` certificates). It prints
// one JSON object on stdout (certificates per second, p50/p99/max latency, failed calls by gRPC
// code or HTTP status) and asserts nothing; it exits non-zero only when it cannot start.
//
// The server is verified as daprd verifies sentry: the chain up to the anchors in `-ca`, and
// `spiffe://<trust-domain>/ns/<sentry-namespace>/dapr-sentry` as the leaf's only URI SAN, with no
// host name check (`-insecure` skips all of it).
//
// Usage:
//
//	loadgen -addr 127.0.0.1:50001 -ca ca.crt -key ed25519 -callers 32 -duration 10s
//	loadgen -protocol cfssl -addr 127.0.0.1:8888 -key ecdsa-p256 -callers 32
package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	sentryv1pb "github.com/dapr/dapr/pkg/proto/sentry/v1"
)

// options are the command-line flags.
type options struct {
	protocol        string
	addr            string
	caFile          string
	insecure        bool
	trustDomain     string
	sentryNamespace string
	appID           string
	namespace       string
	keyType         string
	csrs            int
	callers         int
	conns           int
	warmup          time.Duration
	duration        time.Duration
	count           int
	callTimeout     time.Duration
}

// result is what one run measured, printed as JSON (the shape of bench/load.ts's LoadResult,
// plus what was sent).
type result struct {
	Protocol              string         `json:"protocol"`
	Key                   string         `json:"key"`
	Callers               int            `json:"callers"`
	Connections           int            `json:"connections"`
	Certificates          int            `json:"certificates"`
	Seconds               float64        `json:"seconds"`
	CertificatesPerSecond int            `json:"certificatesPerSecond"`
	P50Ms                 float64        `json:"p50Ms"`
	P99Ms                 float64        `json:"p99Ms"`
	MaxMs                 float64        `json:"maxMs"`
	Errors                map[string]int `json:"errors"`
	// AllCertificates counts every certificate received, warm-up and first calls included
	// (for the server's CPU time per certificate, read by the caller).
	AllCertificates int `json:"allCertificates"`
	// ClientCPUUsPerCertificate is this process's CPU time (user and system) from the first
	// call to the last, per certificate received: the client cost every server carries alike.
	ClientCPUUsPerCertificate float64 `json:"clientCpuUsPerCertificate"`
}

// csr is one pooled certificate signing request.
type csr struct {
	pem       []byte
	publicKey crypto.PublicKey
}

// signFunc makes one signing call on one connection and returns the issued certificate chain
// (PEM, leaf first).
type signFunc func(ctx context.Context, request csr) ([]byte, error)

func main() {
	var o options
	flag.StringVar(&o.protocol, "protocol", "grpc", "grpc (Dapr's sentry CA service over TLS) or cfssl (POST /api/v1/cfssl/sign)")
	flag.StringVar(&o.addr, "addr", "127.0.0.1:50001", "server address, host:port")
	flag.StringVar(&o.caFile, "ca", "", "PEM trust anchors: sentry's, or CFSSL's TLS certificate (then HTTPS, host name localhost)")
	flag.BoolVar(&o.insecure, "insecure", false, "do not verify sentry's certificate")
	flag.StringVar(&o.trustDomain, "trust-domain", "localhost", "sentry's trust domain, for its SPIFFE ID")
	flag.StringVar(&o.sentryNamespace, "sentry-namespace", "default", "sentry's namespace, for its SPIFFE ID")
	flag.StringVar(&o.appID, "app-id", "loadgen", "app ID the certificates are requested for")
	flag.StringVar(&o.namespace, "namespace", "default", "namespace the certificates are requested for")
	flag.StringVar(&o.keyType, "key", "ed25519", "CSR key type: ecdsa-p256, ed25519 or rsa2048")
	flag.IntVar(&o.csrs, "csrs", 32, "size of the pre-generated CSR pool")
	flag.IntVar(&o.callers, "callers", 32, "concurrent callers")
	flag.IntVar(&o.conns, "conns", 0, "connections the callers share round-robin (default min(callers, 32))")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured load before the measurement")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "measured time (with -count: the most to wait for the count)")
	flag.IntVar(&o.count, "count", 0, "stop after this many measured certificates, before -duration ends")
	flag.DurationVar(&o.callTimeout, "call-timeout", 30*time.Second, "deadline of one call")
	flag.Parse()
	if o.conns <= 0 {
		o.conns = min(o.callers, 32)
	}
	if o.callers < 1 || o.csrs < 1 {
		fatal(errors.New("-callers and -csrs must be at least 1"))
	}

	pool, err := makeCSRs(o.keyType, o.csrs)
	if err != nil {
		fatal(err)
	}
	var signs []signFunc
	var closeAll func()
	switch o.protocol {
	case "grpc":
		signs, closeAll, err = dialSentry(o)
	case "cfssl":
		signs, closeAll, err = dialCFSSL(o)
	default:
		err = fmt.Errorf("unknown -protocol %q", o.protocol)
	}
	if err != nil {
		fatal(err)
	}
	defer closeAll()
	cpuBefore := cpuTime()
	if err := prime(o, signs, pool[0]); err != nil {
		fatal(err)
	}

	res := run(o, signs, pool)
	res.Protocol, res.Key, res.Connections = o.protocol, o.keyType, o.conns
	res.AllCertificates += len(signs)
	res.ClientCPUUsPerCertificate = round(float64(cpuTime()-cpuBefore) / float64(time.Microsecond) /
		float64(res.AllCertificates))
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
}

// cpuTime is the CPU time this process has used so far, user and system.
func cpuTime() time.Duration {
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		return 0
	}
	return time.Duration(usage.Utime.Nano() + usage.Stime.Nano())
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "loadgen:", err)
	os.Exit(1)
}

// makeCSRs generates n keys of one type and a CSR for each, with an empty subject and no
// extensions, as daprd sends.
func makeCSRs(keyType string, n int) ([]csr, error) {
	pool := make([]csr, n)
	for i := range pool {
		var key crypto.Signer
		var err error
		switch keyType {
		case "ecdsa-p256":
			key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		case "ed25519":
			_, key, err = ed25519.GenerateKey(rand.Reader)
		case "rsa2048":
			key, err = rsa.GenerateKey(rand.Reader, 2048)
		default:
			return nil, fmt.Errorf("unknown -key %q (ecdsa-p256, ed25519 or rsa2048)", keyType)
		}
		if err != nil {
			return nil, err
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, new(x509.CertificateRequest), key)
		if err != nil {
			return nil, err
		}
		pool[i] = csr{
			pem:       pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
			publicKey: key.Public(),
		}
	}
	return pool, nil
}

// dialSentry opens o.conns gRPC connections (one HTTP/2 connection each) and returns a signing
// call for each.
func dialSentry(o options) ([]signFunc, func(), error) {
	tlsConfig, err := sentryTLS(o)
	if err != nil {
		return nil, nil, err
	}
	creds := credentials.NewTLS(tlsConfig)
	conns := make([]*grpc.ClientConn, o.conns)
	signs := make([]signFunc, o.conns)
	for i := range conns {
		conn, err := grpc.NewClient("passthrough:///"+o.addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			return nil, nil, err
		}
		conns[i] = conn
		client := sentryv1pb.NewCAClient(conn)
		signs[i] = func(ctx context.Context, request csr) ([]byte, error) {
			resp, err := client.SignCertificate(ctx, &sentryv1pb.SignCertificateRequest{
				CertificateSigningRequest: request.pem,
				Id:                        o.appID,
				Namespace:                 o.namespace,
				TokenValidator:            sentryv1pb.SignCertificateRequest_INSECURE,
			})
			return resp.GetWorkloadCertificate(), err
		}
	}
	closeAll := func() {
		for _, conn := range conns {
			conn.Close()
		}
	}
	return signs, closeAll, nil
}

// sentryTLS is the client TLS configuration daprd uses towards sentry (go-spiffe's
// tlsconfig.AuthorizeID): the chain must lead to the anchors and the leaf must be an X.509 SVID
// whose only URI SAN is sentry's SPIFFE ID; the host name is not checked.
func sentryTLS(o options) (*tls.Config, error) {
	if o.insecure {
		return &tls.Config{InsecureSkipVerify: true}, nil //nolint:gosec // asked for with -insecure
	}
	roots, err := loadRoots(o.caFile)
	if err != nil {
		return nil, err
	}
	want := fmt.Sprintf("spiffe://%s/ns/%s/dapr-sentry", o.trustDomain, o.sentryNamespace)
	verify := func(raw [][]byte, _ [][]*x509.Certificate) error {
		certs := make([]*x509.Certificate, len(raw))
		for i, der := range raw {
			cert, err := x509.ParseCertificate(der)
			if err != nil {
				return err
			}
			certs[i] = cert
		}
		if len(certs) == 0 {
			return errors.New("sentry presented no certificate")
		}
		leaf := certs[0]
		switch {
		case len(leaf.URIs) != 1:
			return fmt.Errorf("sentry's certificate has %d URI SANs, want exactly one", len(leaf.URIs))
		case leaf.URIs[0].String() != want:
			return fmt.Errorf("sentry's certificate is for %s, want %s", leaf.URIs[0], want)
		case leaf.IsCA || leaf.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0:
			return errors.New("sentry's certificate is a CA certificate")
		}
		intermediates := x509.NewCertPool()
		for _, cert := range certs[1:] {
			intermediates.AddCert(cert)
		}
		_, err := leaf.Verify(x509.VerifyOptions{
			Roots:         roots,
			Intermediates: intermediates,
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		})
		return err
	}
	return &tls.Config{
		// Not insecure: verify checks the chain and the SPIFFE ID instead of a host name.
		InsecureSkipVerify:    true, //nolint:gosec
		VerifyPeerCertificate: verify,
		MinVersion:            tls.VersionTLS12,
	}, nil
}

func loadRoots(file string) (*x509.CertPool, error) {
	if file == "" {
		return nil, errors.New("-ca is required (or -insecure)")
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("no certificate in %s", file)
	}
	return roots, nil
}

// dialCFSSL returns a signing call to CFSSL's /api/v1/cfssl/sign over keep-alive HTTP/1.1 with
// at most o.conns connections (HTTPS when -ca names CFSSL's TLS certificate).
func dialCFSSL(o options) ([]signFunc, func(), error) {
	transport := &http.Transport{
		MaxConnsPerHost:     o.conns,
		MaxIdleConnsPerHost: o.conns,
		// An empty map keeps HTTP/1.1 over TLS too, as CFSSL's clients speak it.
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
	url := "http://" + o.addr + "/api/v1/cfssl/sign"
	if o.caFile != "" {
		roots, err := loadRoots(o.caFile)
		if err != nil {
			return nil, nil, err
		}
		transport.TLSClientConfig = &tls.Config{RootCAs: roots, ServerName: "localhost"}
		url = "https://" + o.addr + "/api/v1/cfssl/sign"
	}
	client := &http.Client{Transport: transport}
	sign := func(ctx context.Context, request csr) ([]byte, error) {
		body, _ := json.Marshal(map[string]string{"certificate_request": string(request.pem)})
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		if err != nil {
			return nil, err
		}
		var answer struct {
			Success bool `json:"success"`
			Result  struct {
				Certificate string `json:"certificate"`
			} `json:"result"`
		}
		if resp.StatusCode != http.StatusOK || json.Unmarshal(data, &answer) != nil || !answer.Success {
			return nil, httpError{resp.StatusCode, string(data)}
		}
		return []byte(answer.Result.Certificate), nil
	}
	return []signFunc{sign}, transport.CloseIdleConnections, nil
}

// httpError is a refused CFSSL call.
type httpError struct {
	status int
	body   string
}

func (e httpError) Error() string { return fmt.Sprintf("HTTP %d: %.200s", e.status, e.body) }

// prime makes one call on every connection (which connects it) and checks what comes back: a
// certificate for the CSR's key. A server that refuses the CSR stops the run here.
func prime(o options, signs []signFunc, request csr) error {
	for i, sign := range signs {
		ctx, cancel := context.WithTimeout(context.Background(), o.callTimeout)
		chain, err := sign(ctx, request)
		cancel()
		if err != nil {
			return fmt.Errorf("first call on connection %d: %w", i, err)
		}
		block, _ := pem.Decode(chain)
		if block == nil {
			return fmt.Errorf("first call on connection %d: no PEM certificate in the answer", i)
		}
		leaf, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return fmt.Errorf("first call on connection %d: %w", i, err)
		}
		if !leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(request.publicKey) {
			return fmt.Errorf("first call on connection %d: the certificate is not for the CSR's key", i)
		}
	}
	return nil
}

// caller is one caller's record of the measured window.
type caller struct {
	latencies []time.Duration
	errors    map[string]int
}

// run drives the load and measures it.
func run(o options, signs []signFunc, pool []csr) result {
	var (
		stopped  atomic.Bool
		measured atomic.Int64 // successful measured calls, for -count
		received atomic.Int64 // every successful call
		endOnce  sync.Once
		end      time.Time
		wg       sync.WaitGroup
	)
	start := time.Now().Add(o.warmup)
	deadline := start.Add(o.duration)
	stopAt := func(t time.Time) {
		endOnce.Do(func() { end = t; stopped.Store(true) })
	}
	callers := make([]caller, o.callers)
	for i := range callers {
		c := &callers[i]
		c.errors = map[string]int{}
		sign := signs[i%len(signs)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := i; !stopped.Load(); n++ {
				ctx, cancel := context.WithTimeout(context.Background(), o.callTimeout)
				began := time.Now()
				_, err := sign(ctx, pool[n%len(pool)])
				done := time.Now()
				cancel()
				if err == nil {
					received.Add(1)
				}
				inWindow := !done.Before(start) && done.Before(deadline)
				switch {
				case !inWindow:
				case err != nil:
					c.errors[reason(err)]++
				case o.count == 0:
					c.latencies = append(c.latencies, done.Sub(began))
				default:
					if k := measured.Add(1); k <= int64(o.count) {
						c.latencies = append(c.latencies, done.Sub(began))
						if k == int64(o.count) {
							stopAt(done)
						}
					}
				}
				if err != nil {
					time.Sleep(time.Millisecond) // a refused call must not become a hot loop
				}
			}
		}()
	}
	timer := time.AfterFunc(time.Until(deadline), func() { stopAt(deadline) })
	wg.Wait()
	timer.Stop()

	var all []time.Duration
	errs := map[string]int{}
	for _, c := range callers {
		all = append(all, c.latencies...)
		for why, n := range c.errors {
			errs[why] += n
		}
	}
	slices.Sort(all)
	seconds := end.Sub(start).Seconds()
	return result{
		Callers:               o.callers,
		Certificates:          len(all),
		Seconds:               round(seconds),
		CertificatesPerSecond: int(math.Round(float64(len(all)) / seconds)),
		P50Ms:                 percentile(all, 50),
		P99Ms:                 percentile(all, 99),
		MaxMs:                 percentile(all, 100),
		Errors:                errs,
		AllCertificates:       int(received.Load()),
	}
}

// codeNames are the gRPC status codes as the protocol spells them (grpc-status names).
var codeNames = [...]string{
	"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
	"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
	"OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
}

// reason names a failed call: its gRPC code, its HTTP status, or the start of its message.
func reason(err error) string {
	var refused httpError
	if errors.As(err, &refused) {
		return fmt.Sprintf("HTTP %d", refused.status)
	}
	if s, ok := status.FromError(err); ok {
		if code := int(s.Code()); code < len(codeNames) {
			return codeNames[code]
		}
		return s.Code().String()
	}
	message := err.Error()
	return message[:min(len(message), 80)]
}

// percentile is the p-th percentile of sorted latencies, in milliseconds (NaN-free: 0 when empty).
func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := min(len(sorted)-1, int(p/100*float64(len(sorted))))
	return round(float64(sorted[i]) / float64(time.Millisecond))
}

func round(v float64) float64 { return math.Round(v*100) / 100 }
