// Command residency reports how much of a running process's executable is resident: per loaded
// segment of the ELF file, and for the code segment by Go package (from the symbol table), read
// from /proc/<pid>/maps and /proc/<pid>/pagemap (root). It is how docs/benchmarks.md found that
// a settled agent at scale holds nearly its whole binary resident, not only the code it runs:
//
//	residency <pid> [packages to show]
package main

import (
	"bufio"
	"cmp"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

const pageSize = 4096

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: residency <pid> [packages to show]")
		os.Exit(2)
	}
	show := 30
	if len(os.Args) > 2 {
		show, _ = strconv.Atoi(os.Args[2])
	}
	if err := run(os.Args[1], show); err != nil {
		fmt.Fprintln(os.Stderr, "residency:", err)
		os.Exit(1)
	}
}

func run(pid string, show int) error {
	exe, err := os.Readlink("/proc/" + pid + "/exe")
	if err != nil {
		return err
	}
	f, err := elf.Open("/proc/" + pid + "/exe")
	if err != nil {
		return err
	}
	defer f.Close()
	pages, err := residentPages(pid, exe)
	if err != nil {
		return err
	}
	syms, _ := f.Symbols() // none in a stripped binary: then no split by package
	syms = slices.DeleteFunc(syms, func(s elf.Symbol) bool { return s.Size == 0 })
	slices.SortFunc(syms, func(a, b elf.Symbol) int { return cmp.Compare(a.Value, b.Value) })

	var total, mapped uint64
	byPackage := map[string]uint64{}
	for _, p := range f.Progs {
		if p.Type != elf.PT_LOAD || p.Filesz == 0 {
			continue
		}
		var resident uint64
		first, end := p.Vaddr&^(pageSize-1), (p.Vaddr+p.Filesz+pageSize-1)&^(pageSize-1)
		for addr := first; addr < end; addr += pageSize {
			if !pages[addr] {
				continue
			}
			resident += pageSize
			if p.Flags&elf.PF_X != 0 {
				attribute(syms, addr, byPackage)
			}
		}
		total += resident
		mapped += end - first
		fmt.Printf("segment %-3s %8.2f MiB of %8.2f MiB resident\n", flags(p.Flags), mib(resident), mib(end-first))
	}
	fmt.Printf("all         %8.2f MiB of %8.2f MiB resident (%s)\n", mib(total), mib(mapped), exe)
	type share struct {
		pkg   string
		bytes uint64
	}
	var shares []share
	for pkg, n := range byPackage {
		shares = append(shares, share{pkg, n})
	}
	slices.SortFunc(shares, func(a, b share) int { return cmp.Compare(b.bytes, a.bytes) })
	for _, s := range shares[:min(show, len(shares))] {
		fmt.Printf("%8.0f KiB of resident code  %s\n", float64(s.bytes)/1024, s.pkg)
	}
	return nil
}

// residentPages is the set of page addresses of the process's mappings of exe that are present.
func residentPages(pid, exe string) (map[uint64]bool, error) {
	maps, err := os.Open("/proc/" + pid + "/maps")
	if err != nil {
		return nil, err
	}
	defer maps.Close()
	pagemap, err := os.Open("/proc/" + pid + "/pagemap")
	if err != nil {
		return nil, err
	}
	defer pagemap.Close()
	present := map[uint64]bool{}
	sc := bufio.NewScanner(maps)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[5] != exe {
			continue
		}
		lo, hi, _ := strings.Cut(fields[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("reading maps: %q", sc.Text())
		}
		entries := make([]byte, 8*((end-start)/pageSize))
		if _, err := pagemap.ReadAt(entries, int64(start/pageSize*8)); err != nil {
			return nil, fmt.Errorf("reading pagemap: %w", err)
		}
		for i := range (end - start) / pageSize {
			if binary.LittleEndian.Uint64(entries[i*8:])&(1<<63) != 0 { // present
				present[start+i*pageSize] = true
			}
		}
	}
	return present, sc.Err()
}

// attribute adds the bytes of the page at addr to the packages of the symbols it holds.
func attribute(syms []elf.Symbol, addr uint64, byPackage map[string]uint64) {
	i, _ := slices.BinarySearchFunc(syms, addr, func(s elf.Symbol, a uint64) int {
		return cmp.Compare(s.Value+s.Size, a+1)
	})
	for ; i < len(syms) && syms[i].Value < addr+pageSize; i++ {
		s := syms[i]
		if lo, hi := max(s.Value, addr), min(s.Value+s.Size, addr+pageSize); hi > lo {
			byPackage[packageOf(s.Name)] += hi - lo
		}
	}
}

// packageOf is the import path of a Go symbol: "k8s.io/api/core/v1.(*Pod).Marshal" is
// "k8s.io/api/core/v1".
func packageOf(sym string) string {
	slash := strings.LastIndex(sym, "/")
	if dot := strings.Index(sym[slash+1:], "."); dot >= 0 {
		return sym[:slash+1+dot]
	}
	return sym
}

func flags(f elf.ProgFlag) string {
	s := []byte("---")
	if f&elf.PF_R != 0 {
		s[0] = 'r'
	}
	if f&elf.PF_W != 0 {
		s[1] = 'w'
	}
	if f&elf.PF_X != 0 {
		s[2] = 'x'
	}
	return string(s)
}

func mib(n uint64) float64 { return float64(n) / (1 << 20) }
