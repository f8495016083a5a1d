// Command oidccheck is an independent OpenID Connect relying party for the sentry project's
// tests (tests/e2e/oidc_relying_party_test.ts), built on coreos/go-oidc:
//
//	oidccheck -issuer https://127.0.0.1:PORT -ca ca.pem -audience aud1[,aud2]
//
// does OIDC discovery at <issuer>/.well-known/openid-configuration over TLS (trusting only the
// PEM certificates of -ca; go-oidc checks that the discovered issuer equals -issuer), takes
// the signing algorithms from the discovery document, and verifies every token read from
// stdin (one per line) with go-oidc's IDTokenVerifier: signature against the key set fetched
// from jwks_uri (cached; refetched when a token names an unknown key), issuer, expiry. The
// client-id check is skipped; instead the token's aud must contain every -audience. It prints
// one JSON line per token, {"ok":true,"sub":...,"aud":[...],"kid":...} or
// {"ok":false,"err":...,"kid":...}, as soon as that token is verified, and exits 0 at the end
// of stdin (2 when discovery fails).
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
)

type result struct {
	OK  bool     `json:"ok"`
	Err string   `json:"err,omitempty"`
	Sub string   `json:"sub,omitempty"`
	Aud []string `json:"aud,omitempty"`
	Kid string   `json:"kid,omitempty"`
}

// anyAlgorithm lets go-jose parse the header of any token, only to report its kid.
var anyAlgorithm = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512, jose.EdDSA,
}

func main() {
	issuer := flag.String("issuer", "", "the issuer URL (discovery at <issuer>/.well-known/openid-configuration)")
	caFile := flag.String("ca", "", "PEM file of the CA certificates that the OIDC server's certificate chains to")
	audience := flag.String("audience", "", "comma-separated audiences that every token's aud must contain")
	flag.Parse()
	if *issuer == "" || *caFile == "" || *audience == "" {
		fmt.Fprintln(os.Stderr, "oidccheck: -issuer, -ca and -audience are required")
		os.Exit(2)
	}
	caPEM, err := os.ReadFile(*caFile)
	if err != nil {
		fail(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		fail(fmt.Errorf("no certificate in %s", *caFile))
	}
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}},
	}
	ctx := oidc.ClientContext(context.Background(), client)
	provider, err := oidc.NewProvider(ctx, *issuer)
	if err != nil {
		fail(fmt.Errorf("discovery: %w", err))
	}
	verifier := provider.VerifierContext(ctx, &oidc.Config{SkipClientIDCheck: true})
	wanted := strings.Split(*audience, ",")

	out := json.NewEncoder(os.Stdout)
	lines := bufio.NewScanner(os.Stdin)
	lines.Buffer(make([]byte, 64*1024), 1024*1024)
	for lines.Scan() {
		token := strings.TrimSpace(lines.Text())
		if token == "" {
			continue
		}
		_ = out.Encode(check(ctx, verifier, token, wanted))
	}
	if err := lines.Err(); err != nil {
		fail(err)
	}
}

func check(ctx context.Context, verifier *oidc.IDTokenVerifier, token string, wanted []string) result {
	var r result
	if parsed, err := jose.ParseSigned(token, anyAlgorithm); err == nil && len(parsed.Signatures) == 1 {
		r.Kid = parsed.Signatures[0].Header.KeyID
	}
	idToken, err := verifier.Verify(ctx, token)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	r.Sub, r.Aud = idToken.Subject, idToken.Audience
	for _, aud := range wanted {
		if !slices.Contains(idToken.Audience, aud) {
			r.Err = fmt.Sprintf("audience %q not in %q", aud, idToken.Audience)
			return r
		}
	}
	r.OK = true
	return r
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "oidccheck:", err)
	os.Exit(2)
}
