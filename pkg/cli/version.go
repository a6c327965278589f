package cli

import (
	"io"
	"runtime"

	"github.com/spf13/cobra"
)

// versionInfo is the version verb's output (JSON schema in docs/cli.md).
type versionInfo struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	GoVersion string `json:"goVersion"`
}

func newVersionCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print edgeplanectl's version",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			v := versionInfo{Version: e.opts.Version, Commit: e.opts.Commit, GoVersion: runtime.Version()}
			if v.Version == "" {
				v.Version = "dev"
			}
			return e.print(v, func(w io.Writer) {
				row(w, "version", v.Version)
				row(w, "commit", orDash(v.Commit))
				row(w, "go", v.GoVersion)
			})
		},
	}
}
