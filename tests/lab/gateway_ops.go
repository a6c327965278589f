package lab

import "context"

// SetPassword changes the TCP-MD5 password of the gateway's sessions ("" for none), as an
// operator rotating a site's BGP password edits the router: bird.conf is rewritten and bird
// reconfigured (`birdc configure`), which restarts the sessions whose password changed.
func (g *Gateway) SetPassword(ctx context.Context, password string) error {
	g.password = password
	return g.reconfigure(ctx, g.config(g.Dir))
}
