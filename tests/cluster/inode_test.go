package cluster

import (
	"os"
	"syscall"
)

// inode is a file's inode number (a namespace's identity for nsfs files).
func inode(st os.FileInfo) uint64 { return st.Sys().(*syscall.Stat_t).Ino }
