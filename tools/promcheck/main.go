// promcheck checks a Prometheus text exposition on stdin as `promtool check metrics` does:
// it runs the very linter promtool runs (client_golang's promlint, which parses with
// common/expfmt, the official text-format parser) and prints each problem on a line as
// `METRIC TEXT`. Exit status: 0 clean, 1 the text does not parse, 3 lint problems (as
// promtool). It stands in for promtool, whose module takes far longer to build.
package main

import (
	"bytes"
	"fmt"
	"io"
	"os"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func main() {
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "reading stdin:", err)
		os.Exit(1)
	}
	// The official parser first, so a parse error is reported as such.
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(input))
	if err != nil {
		fmt.Fprintln(os.Stderr, "error while parsing:", err)
		os.Exit(1)
	}
	problems, err := promlint.New(bytes.NewReader(input)).Lint()
	if err != nil {
		fmt.Fprintln(os.Stderr, "error while linting:", err)
		os.Exit(1)
	}
	for _, problem := range problems {
		fmt.Fprintln(os.Stderr, problem.Metric, problem.Text)
	}
	if len(problems) > 0 {
		os.Exit(3)
	}
	fmt.Printf("%d metric families, no problems\n", len(families))
}
