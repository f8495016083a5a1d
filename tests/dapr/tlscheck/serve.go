package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/dapr/dapr/pkg/healthz"
	"github.com/dapr/dapr/pkg/modes"
	"github.com/dapr/dapr/pkg/security"
	"github.com/dapr/kit/crypto/spiffe"
)

// serveAs gets a certificate for appID through Dapr's own security provider (pkg/security,
// exactly the options Dapr's operator passes in Kubernetes mode: mTLS on, an RSA key for
// webhook serving, the sentry token read from /var/run/secrets/dapr.io/sentrytoken/token and
// the namespace from NAMESPACE), then serves TLS on listen with the provider's
// TLSServerConfigNoClientAuth, as the operator's webhook server does, until SIGTERM.
func serveAs(appID, listen, sentryAddress, anchorsFile, trustDomain string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	rsa := spiffe.KeyAlgorithmRSA
	provider, err := security.New(ctx, security.Options{
		SentryAddress:           sentryAddress,
		ControlPlaneTrustDomain: trustDomain,
		ControlPlaneNamespace:   security.CurrentNamespace(),
		TrustAnchorsFile:        &anchorsFile,
		AppID:                   appID,
		MTLSEnabled:             true,
		Mode:                    modes.KubernetesMode,
		Healthz:                 healthz.New(),
		KeyAlgorithm:            &rsa,
	})
	if err != nil {
		return err
	}
	errs := make(chan error, 1)
	go func() { errs <- provider.Run(ctx) }()
	handler, err := provider.Handler(ctx)
	if err != nil {
		return err
	}
	listener, err := tls.Listen("tcp", listen, handler.TLSServerConfigNoClientAuth())
	if err != nil {
		return err
	}
	defer listener.Close()
	fmt.Printf("serving %s on %s\n", handler.ID(), listener.Addr())
	go func() {
		for {
			conn, err := listener.Accept()
			if err != nil {
				return
			}
			go func() {
				_ = conn.(*tls.Conn).Handshake()
				conn.Close()
			}()
		}
	}()
	select {
	case <-ctx.Done():
		return nil
	case err := <-errs:
		return err
	}
}
