// Command pause is the lab's pod sandbox ("pause") and workload image: a static binary that blocks
// until SIGTERM or SIGINT. scripts/install-containerd.sh packages it as an image (no registry, no
// docker) for the kubelet lab (tests/kubelet).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	<-sigs
}
