package main

import (
	"fmt"
	"strings"
)

// scaleTable renders BenchmarkScale's groups (scale-<nodes>n-<services>s-<endpoints>e): one row
// per metric with the median, every sample (one per agent; per round for the new node) and, where
// issue 18 sets a target, the worst sample against it (below 1x: met by every agent).
func scaleTable(m *machineResults) string {
	var sb strings.Builder
	for _, g := range m.groups {
		if !strings.HasPrefix(g, "scale-") {
			continue
		}
		fmt.Fprintf(&sb, "Scale (`%s`), one sample per agent (new node: per round):\n\n", g)
		sb.WriteString("| metric | unit | median | samples | worst vs target |\n|---|---|---|---|---|\n")
		for _, r := range m.byGroup[g] {
			target := "-"
			if r.Ratio > 0 {
				target = fmt.Sprintf("%.2fx", r.Ratio)
			}
			fmt.Fprintf(&sb, "| %s | %s | %s | %s | %s |\n", r.Metric, r.Unit, num(r.Median), joinNums(r.Samples), target)
		}
		sb.WriteString("\n")
	}
	return sb.String()
}
