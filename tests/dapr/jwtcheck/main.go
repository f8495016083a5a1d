// Command jwtcheck validates a JWT-SVID the way Dapr's Go side would, for the sentry project's
// JWT tests (tests/e2e/jwt_interop_test.ts):
//
//	jwtcheck -jwks jwks.json -token token.txt -trust-domain public -audience public
//	    builds a go-spiffe JWT bundle for the trust domain from the JWKS (jwtbundle.Parse) and
//	    validates the token with go-spiffe's jwtsvid.ParseAndValidate (the package daprd uses)
//	    for the audience;
//	jwtcheck -jose ...
//	    the same checks done with go-jose directly, which also knows EdDSA: go-spiffe's jwtsvid
//	    accepts RS*, PS* and ES* only, so it refuses EdDSA tokens before looking at them.
//
//	jwtcheck -dapr-issue jwt.key -trust-domain public -audience public
//	    runs Dapr's own code on a PEM key instead (pkg/sentry/server/ca/bundle.GenerateJWT and
//	    pkg/sentry/server/ca/jwt, with Dapr's default kid, RS256, a 15 min clock skew and a 1 h
//	    TTL) and prints {"jwks": the JWKS Dapr writes, "token": a token Dapr signs}, so that
//	    the tests can compare ours with Dapr's byte for byte.
//
// -token - reads the token from stdin. It prints one JSON object (the SPIFFE ID, audience,
// expiry, header and all claims) and exits 0, or prints the reason and exits 1.
package main

import (
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/dapr/dapr/pkg/sentry/server/ca/bundle"
	daprjwt "github.com/dapr/dapr/pkg/sentry/server/ca/jwt"
	"github.com/dapr/kit/crypto/pem"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
)

type report struct {
	SpiffeID string         `json:"spiffeId"`
	Audience []string       `json:"audience"`
	Expiry   string         `json:"expiry"`
	Header   map[string]any `json:"header"`
	Claims   map[string]any `json:"claims"`
	Checker  string         `json:"checker"`
}

// everyAlgorithm is what the -jose mode accepts: all JWS signature algorithms go-jose knows.
var everyAlgorithm = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512, jose.EdDSA,
}

func main() {
	jwksFile := flag.String("jwks", "", "the JWKS file (required)")
	tokenFile := flag.String("token", "", "a file holding the token, or - for stdin (required)")
	trustDomain := flag.String("trust-domain", "", "the trust domain the JWKS is the bundle of (required)")
	audience := flag.String("audience", "", "the audience the token must be for (required)")
	useJose := flag.Bool("jose", false, "validate with go-jose directly instead of go-spiffe's jwtsvid")
	daprIssue := flag.String("dapr-issue", "", "a PEM key: print the JWKS and a token Dapr's code makes with it")
	flag.Parse()
	if *daprIssue != "" {
		if err := issueWithDapr(*daprIssue, *trustDomain, *audience); err != nil {
			fail(err)
		}
		return
	}
	if *jwksFile == "" || *tokenFile == "" || *trustDomain == "" || *audience == "" {
		fail(errors.New("-jwks, -token, -trust-domain and -audience are required"))
	}
	jwks, err := os.ReadFile(*jwksFile)
	if err != nil {
		fail(err)
	}
	token, err := readToken(*tokenFile)
	if err != nil {
		fail(err)
	}
	td, err := spiffeid.TrustDomainFromString(*trustDomain)
	if err != nil {
		fail(err)
	}
	var out *report
	if *useJose {
		out, err = checkWithJose(token, jwks, td, *audience)
	} else {
		out, err = checkWithSpiffe(token, jwks, td, *audience)
	}
	if err != nil {
		fail(err)
	}
	if out.Header, err = header(token); err != nil {
		fail(err)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fail(err)
	}
}

func readToken(name string) (string, error) {
	var data []byte
	var err error
	if name == "-" {
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(name)
	}
	return strings.TrimSpace(string(data)), err
}

// checkWithSpiffe is what a Go relying party using go-spiffe does.
func checkWithSpiffe(token string, jwks []byte, td spiffeid.TrustDomain, audience string) (*report, error) {
	bundle, err := jwtbundle.Parse(td, jwks)
	if err != nil {
		return nil, err
	}
	svid, err := jwtsvid.ParseAndValidate(token, bundle, []string{audience})
	if err != nil {
		return nil, err
	}
	return &report{
		SpiffeID: svid.ID.String(),
		Audience: svid.Audience,
		Expiry:   svid.Expiry.Format(time.RFC3339),
		Claims:   svid.Claims,
		Checker:  "go-spiffe jwtsvid",
	}, nil
}

// checkWithJose does jwtsvid's checks with go-jose alone: typ, kid, signature by the JWKS key
// with that kid, a SPIFFE ID subject in the trust domain, exp present, audience and time.
func checkWithJose(token string, jwks []byte, td spiffeid.TrustDomain, audience string) (*report, error) {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(jwks, &set); err != nil {
		return nil, fmt.Errorf("unable to parse JWKS: %w", err)
	}
	tok, err := jwt.ParseSigned(token, everyAlgorithm)
	if err != nil {
		return nil, fmt.Errorf("unable to parse JWT token: %w", err)
	}
	head := tok.Headers[0]
	if typ, ok := head.ExtraHeaders[jose.HeaderType]; ok && typ != "JWT" && typ != "JOSE" {
		return nil, fmt.Errorf("token header type %v is neither JWT nor JOSE", typ)
	}
	keys := set.Key(head.KeyID)
	if head.KeyID == "" || len(keys) == 0 {
		return nil, fmt.Errorf("no JWT authority %q in the JWKS", head.KeyID)
	}
	var claims jwt.Claims
	all := map[string]any{}
	if err := tok.Claims(keys[0].Key, &claims, &all); err != nil {
		return nil, fmt.Errorf("unable to get claims from token: %w", err)
	}
	id, err := spiffeid.FromString(claims.Subject)
	if err != nil {
		return nil, fmt.Errorf("token has an invalid subject claim: %w", err)
	}
	if id.TrustDomain() != td {
		return nil, fmt.Errorf("subject %s is not in trust domain %s", id, td)
	}
	if claims.Expiry == nil {
		return nil, errors.New("token missing exp claim")
	}
	if err := claims.Validate(jwt.Expected{AnyAudience: jwt.Audience{audience}, Time: time.Now()}); err != nil {
		return nil, err
	}
	return &report{
		SpiffeID: id.String(),
		Audience: claims.Audience,
		Expiry:   claims.Expiry.Time().UTC().Format(time.RFC3339),
		Claims:   all,
		Checker:  "go-jose",
	}, nil
}

// header decodes the token's protected header (already verified by then).
func header(token string) (map[string]any, error) {
	tok, err := jose.ParseSigned(token, everyAlgorithm)
	if err != nil {
		return nil, err
	}
	h := tok.Signatures[0].Protected
	out := map[string]any{"alg": h.Algorithm, "kid": h.KeyID}
	for name, value := range h.ExtraHeaders {
		out[string(name)] = value
	}
	return out, nil
}

// issueWithDapr prints what Dapr's sentry makes of a JWT key: the JWKS it writes when it
// generated the key, and a token its issuer signs (kid as Dapr derives it when none is set).
func issueWithDapr(keyFile, trustDomain, audience string) error {
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return err
	}
	key, err := pem.DecodePEMPrivateKey(keyPEM)
	if err != nil {
		return err
	}
	generated, err := bundle.GenerateJWT(bundle.OptionsJWT{TrustDomain: trustDomain, JWTRootKey: key})
	if err != nil {
		return err
	}
	signKey, err := jwk.FromRaw(key)
	if err != nil {
		return err
	}
	thumbprint, err := signKey.Thumbprint(crypto.SHA256)
	if err != nil {
		return err
	}
	if err := signKey.Set(jwk.KeyIDKey, base64.StdEncoding.EncodeToString(thumbprint)); err != nil {
		return err
	}
	if err := signKey.Set(jwk.AlgorithmKey, "RS256"); err != nil {
		return err
	}
	issuer, err := daprjwt.New(daprjwt.IssuerOptions{SignKey: signKey, AllowedClockSkew: 15 * time.Minute, JWKS: generated.JWKS})
	if err != nil {
		return err
	}
	td, err := spiffeid.TrustDomainFromString(trustDomain)
	if err != nil {
		return err
	}
	token, err := issuer.Generate(context.Background(), &daprjwt.Request{
		TrustDomain: td, Audiences: []string{audience}, Namespace: "default", AppID: "myapp", TTL: time.Hour,
	})
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]string{"jwks": string(generated.JWKSJson), "token": token})
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "jwtcheck:", err)
	os.Exit(1)
}
