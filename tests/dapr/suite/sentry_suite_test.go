// Package suite runs the cases that Dapr's integration suite registers for its sentry
// (github.com/dapr/dapr/tests/integration/suite/sentry/..., at the release pinned in ../go.mod)
// against whatever sentry binary DAPR_INTEGRATION_SENTRY_PATH names: ours, or Dapr's own as
// the control. Each case runs as a subtest named as Dapr names it, so `go test -json` yields
// one pass/fail line per case (tests/dapr/suite-table.ts turns two runs into a table).
package suite

import (
	"context"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/dapr/dapr/tests/integration/framework"
	"github.com/dapr/dapr/tests/integration/suite"

	// Registers the sentry cases (and nothing else) with the suite.
	_ "github.com/dapr/dapr/tests/integration/suite/sentry"
)

// caseTimeout is the context deadline Dapr's own runner gives each case.
const caseTimeout = 45 * time.Second

// TestDaprSentrySuite runs every registered sentry case, in parallel as Dapr's runner does.
func TestDaprSentrySuite(t *testing.T) {
	if os.Getenv("DAPR_INTEGRATION_SENTRY_PATH") == "" {
		t.Fatal("DAPR_INTEGRATION_SENTRY_PATH must name the sentry binary under test")
	}
	cases := suite.All(t)
	if len(cases) == 0 {
		t.Fatal("Dapr's suite registered no sentry cases")
	}
	for _, named := range cases {
		// A fresh value per run, as Dapr's runner makes: cases keep state in their struct.
		tcase := reflect.New(reflect.TypeOf(named.Case).Elem()).Interface().(suite.Case)
		t.Run(named.Name(), func(t *testing.T) {
			t.Parallel()
			options := tcase.Setup(t)
			ctx, cancel := context.WithTimeout(context.Background(), caseTimeout)
			t.Cleanup(cancel)
			framework.Run(t, ctx, options...)
			tcase.Run(t, ctx)
		})
	}
}
