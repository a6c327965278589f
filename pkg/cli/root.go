// Package cli is edgeplanectl, a bpftool-style inspector of one node's edgeplane datapath. It reads
// the objects the agent pinned under the bpffs root (maps/, progs/, links/), the agent's node.json
// and the name index beside it (pkg/nameindex: pod and node names) directly, so it works while the
// agent is down, restarting or crash-looping: pins are all it needs, names are a bonus.
//
// Each verb lives in its own file and builds one value that is either encoded as JSON (-o json,
// the stable interface, documented in docs/cli.md) or rendered as an aligned table. Verbs open only
// the maps they read and close them before returning; nothing is written.
package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgeplane/edgeplane/pkg/cninode"
	"github.com/edgeplane/edgeplane/pkg/maps"
)

// Options is what the binary tells the CLI about itself.
type Options struct {
	Version string // release version, set at link time
	Commit  string // VCS revision the binary was built from, when known
	// BootTime reads CLOCK_BOOTTIME (the clock of the datapath's last_seen stamps) in nanoseconds;
	// nil reads the system's. Tests set a fixed one.
	BootTime func() (uint64, error)
	// Now is the wall clock (BGP session uptimes); nil reads the system's. Tests set a fixed one.
	Now func() time.Time
}

// Output formats (-o).
const (
	outputTable = "table"
	outputJSON  = "json"
)

// env is the state every verb shares: the global flags, where to write, and what one run has
// read once (interface names, the name index).
type env struct {
	root    string // --bpffs-root
	runDir  string // --run-dir
	output  string // -o
	opts    Options
	out     io.Writer
	errOut  io.Writer // warnings (names.go)
	ifNames *ifNames
	podIdx  *podIndex
	nodeIdx *nodeIndex
	svcIdx  *serviceIndex
	warned  map[string]bool
}

// Main runs edgeplanectl with args (without the program name) and returns the exit code: 0, 1 for
// a failure, 2 for a usage error. Errors are printed as one line on stderr.
func Main(args []string, stdout, stderr io.Writer, opts Options) int {
	cmd := NewRootCommand(opts)
	cmd.SetArgs(args)
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	c, err := cmd.ExecuteC()
	if err == nil {
		return 0
	}
	msg := strings.Join(strings.Fields(err.Error()), " ") // cobra's suggestions span lines
	var ue *usageError
	if errors.As(err, &ue) || isCobraUsageError(err) {
		fmt.Fprintf(stderr, "edgeplanectl: %s (see '%s --help')\n", msg, c.CommandPath())
		return 2
	}
	fmt.Fprintf(stderr, "edgeplanectl: %s\n", msg)
	return 1
}

// NewRootCommand builds the command tree.
func NewRootCommand(opts Options) *cobra.Command {
	e := &env{opts: opts}
	root := &cobra.Command{
		Use:   "edgeplanectl",
		Short: "Inspect the edgeplane datapath of this node from its pinned BPF objects",
		Long: "edgeplanectl reads the maps, programs and links the edgeplane agent pinned under the bpffs\n" +
			"root, and the agent's node.json. It needs no running agent, only the pins (and root).",
		SilenceUsage:  true,
		SilenceErrors: true,
		// Flag values are checked before any verb runs, so "-o yaml" fails like an unknown flag.
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if e.output != outputTable && e.output != outputJSON {
				return usagef("invalid output format %q: use table or json", e.output)
			}
			e.out, e.errOut = cmd.OutOrStdout(), cmd.ErrOrStderr()
			e.ifNames = newIfNames()
			e.warned = map[string]bool{}
			return nil
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	flags := root.PersistentFlags()
	flags.StringVar(&e.root, "bpffs-root", maps.DefaultRoot, "bpffs directory the agent pins maps, programs and links under")
	flags.StringVar(&e.runDir, "run-dir", cninode.DefaultRunDir, "the agent's run directory: node.json and the name index (names/)")
	flags.StringVarP(&e.output, "output", "o", outputTable, "output format: table or json")
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{outputTable, outputJSON}, cobra.ShellCompDirectiveNoFileComp))
	_ = root.MarkPersistentFlagDirname("bpffs-root")
	_ = root.MarkPersistentFlagDirname("run-dir")

	root.AddCommand(
		newMapsCommand(e),
		newProgsCommand(e),
		newEndpointsCommand(e),
		newRoutesCommand(e),
		newNodesCommand(e),
		newDomainsCommand(e),
		newConfigCommand(e),
		newNATCommand(e),
		newServicesCommand(e),
		newConntrackCommand(e),
		newStatsCommand(e),
		newMonitorCommand(e),
		newRouteCommand(e),
		newBGPCommand(e),
		newVersionCommand(e),
	)
	return root
}

// usageError is a mistake in how the command was called: reported with a pointer to --help.
type usageError struct{ err error }

func (u *usageError) Error() string { return u.err.Error() }
func (u *usageError) Unwrap() error { return u.err }

func usagef(format string, args ...any) error { return &usageError{fmt.Errorf(format, args...)} }

// isCobraUsageError recognises the errors cobra itself returns for unknown commands and bad
// arguments, which it does not type.
func isCobraUsageError(err error) bool {
	msg := err.Error()
	return strings.HasPrefix(msg, "unknown command") || strings.HasPrefix(msg, "unknown flag") ||
		strings.HasPrefix(msg, "unknown shorthand flag") || strings.Contains(msg, "arg(s)")
}

// noArgs rejects positional arguments as a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("%s takes no arguments, got %q", cmd.Name(), args[0])
	}
	return nil
}
