package agent

import (
	"log/slog"

	"context"
	"errors"
	goflag "flag"
	"fmt"
	"io"
	"strings"

	"github.com/go-logr/logr"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/klog/v2"
)

// Exit codes of edgeplane-agent, as Go's flag package and edgeplanectl use them.
const (
	exitFailure = 1 // the agent (or the uninstall) failed
	exitUsage   = 2 // a mistake on the command line
)

// Main runs edgeplane-agent with args (without the program name) and returns its exit code: it
// parses the flags into a Config and runs the agent (Run, or Uninstall with --uninstall) until ctx
// ends, unless --help, --version or --validate-flags ask for something else. A usage error is one
// line on stderr with a pointer to --help (exit 2); a failure of the agent is logged (exit 1).
func Main(ctx context.Context, args []string, stdout, stderr io.Writer, version string) int {
	cmd := NewCommand(version, func(ctx context.Context, cfg Config) error {
		ctx = klog.NewContext(ctx, klog.Background())
		// pkg/datapath logs through log/slog (the CNI plugin links it too); in the agent those
		// lines go to klog, in the same format and under the same flags as the rest.
		slog.SetDefault(slog.New(logr.ToSlogHandler(klog.Background())))
		klog.InfoS("Starting edgeplane-agent", "version", cfg.Version, "uninstall", cfg.Uninstall)
		if cfg.Uninstall {
			return Uninstall(ctx, cfg)
		}
		return Run(ctx, cfg)
	})
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	cmd.SetArgs(singleDashCompat(cmd, args, stderr))
	err := cmd.ExecuteContext(ctx)
	defer klog.Flush()
	var ue *usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "edgeplane-agent: %s (see 'edgeplane-agent --help')\n", err)
		return exitUsage
	default:
		klog.ErrorS(err, "edgeplane-agent failed")
		return exitFailure
	}
}

// NewCommand is edgeplane-agent's command line (cobra and pflag, --flag style, as edgeplanectl):
// the agent's own flags (Config.RegisterFlags, --validate-flags, --version, --help), then klog's,
// which --help lists in a section of their own after the agent's. run gets the parsed Config, its
// Version set; Run and Uninstall validate it.
func NewCommand(version string, run func(context.Context, Config) error) *cobra.Command {
	var (
		cfg                        Config
		validateOnly, printVersion bool
	)
	cmd := &cobra.Command{
		Use:   "edgeplane-agent",
		Short: "Program this node's edgeplane datapath and keep its maps equal to the cluster",
		Long: "edgeplane-agent runs on every node (hostNetwork): it registers the node, loads and attaches\n" +
			"the datapath, writes node.json for the CNI plugin and reconciles the pinned maps with the\n" +
			"cluster. With --uninstall it removes what edgeplane put on the node instead.",
		SilenceUsage:  true,
		SilenceErrors: true,
		// A stray argument is most often a flag with a typo'd dash: refuse it rather than ignore it.
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return &usageError{fmt.Errorf("unexpected arguments %q", args)}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case printVersion:
				fmt.Fprintln(cmd.OutOrStdout(), "edgeplane-agent", version)
				return nil
			case validateOnly:
				if err := cfg.Validate(); err != nil {
					return &usageError{fmt.Errorf("invalid flags: %w", err)}
				}
				return nil
			}
			cfg.Version = version
			return run(cmd.Context(), cfg)
		},
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	flags := cmd.Flags()
	cfg.RegisterFlags(flags)
	flags.BoolVar(&validateOnly, "validate-flags", false, "parse and validate the flags, then exit (0: valid); touches neither the host nor the API server")
	flags.BoolVar(&printVersion, "version", false, "print the version and exit")
	logging := klogFlags()
	flags.AddFlagSet(logging)
	cmd.SetUsageFunc(func(cmd *cobra.Command) error {
		own := pflag.NewFlagSet("agent", pflag.ContinueOnError)
		cmd.Flags().VisitAll(func(f *pflag.Flag) {
			if logging.Lookup(f.Name) == nil {
				own.AddFlag(f)
			}
		})
		_, err := fmt.Fprintf(cmd.OutOrStderr(), "Usage:\n  %s [flags]\n\nFlags:\n%s\nLogging flags (klog):\n%s",
			cmd.CommandPath(), own.FlagUsages(), logging.FlagUsages())
		return err
	})
	return cmd
}

// klogFlags are klog's flags (-v, --vmodule, --logtostderr, ...) as pflags; -v keeps its one-letter
// form, as in Kubernetes' own components.
func klogFlags() *pflag.FlagSet {
	goFlags := goflag.NewFlagSet("klog", goflag.ContinueOnError)
	klog.InitFlags(goFlags)
	fs := pflag.NewFlagSet("klog", pflag.ContinueOnError)
	fs.AddGoFlagSet(goFlags)
	return fs
}

// singleDashCompat rewrites the single-dash long flags Go's flag package accepted, which the
// agent took before it moved to pflag ("-node-name=n1", "-log_dir /x"), as two-dash ones, and
// warns about each on stderr, so that command lines written for older agents keep working. Only
// names of the command's flags are rewritten (pflag reads "-v" as klog's shorthand already), and
// nothing after "--".
func singleDashCompat(cmd *cobra.Command, args []string, stderr io.Writer) []string {
	cmd.InitDefaultHelpFlag() // so that "-help" is known too
	out := make([]string, 0, len(args))
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		if rest, ok := strings.CutPrefix(a, "-"); ok && !strings.HasPrefix(rest, "-") {
			if name, _, _ := strings.Cut(rest, "="); len(name) > 1 && cmd.Flags().Lookup(name) != nil {
				fmt.Fprintf(stderr, "edgeplane-agent: read %q as %q: single-dash long flags are deprecated\n", a, "-"+a)
				a = "-" + a
			}
		}
		out = append(out, a)
	}
	return out
}

// usageError is a mistake in how the agent was called: reported with a pointer to --help.
type usageError struct{ err error }

func (u *usageError) Error() string { return u.err.Error() }
func (u *usageError) Unwrap() error { return u.err }
