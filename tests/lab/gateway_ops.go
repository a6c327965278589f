package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// SetPassword changes the TCP-MD5 password of the gateway's sessions ("" for none), as an
// operator rotating a site's BGP password edits the router: bird.conf is rewritten and bird
// reconfigured (`birdc configure`), which restarts the sessions whose password changed.
func (g *Gateway) SetPassword(ctx context.Context, password string) error {
	conf := filepath.Join(g.Dir, "bird.conf")
	if err := os.WriteFile(conf, []byte(g.config(password)), 0o600); err != nil {
		return fmt.Errorf("rewriting the gateway's bird.conf: %w", err)
	}
	out, err := g.Birdc(ctx, "configure")
	if err != nil {
		return fmt.Errorf("birdc configure: %w: %s", err, out)
	}
	if !strings.Contains(out, "Reconfigured") && !strings.Contains(out, "Reconfiguration in progress") {
		return fmt.Errorf("birdc configure: %s", out)
	}
	return nil
}
