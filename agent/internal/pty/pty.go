// Package pty allocates Unix98 pseudo-terminals without cgo.
package pty

import (
	"fmt"
	"os"
	"syscall"
	"unsafe"
)

// Default terminal size.
const (
	DefaultCols = 80
	DefaultRows = 24
)

type winsize struct {
	Row, Col, Xpixel, Ypixel uint16
}

func ioctl(fd, req, arg uintptr) error {
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, req, arg); errno != 0 {
		return errno
	}
	return nil
}

// Open allocates a pty of the given size. It returns the master as a
// non-blocking *os.File (so Close and deadlines interrupt reads), the raw fd
// of the slave (opened O_NOCTTY|O_CLOEXEC, to be handed to the child and then
// closed by the caller) and the slave's path.
func Open(cols, rows uint16) (master *os.File, slave int, name string, err error) {
	mfd, err := syscall.Open("/dev/ptmx", syscall.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, -1, "", fmt.Errorf("open /dev/ptmx: %w", err)
	}
	fail := func(step string, err error) (*os.File, int, string, error) {
		syscall.Close(mfd)
		return nil, -1, "", fmt.Errorf("pty %s: %w", step, err)
	}
	var unlock int32
	if err := ioctl(uintptr(mfd), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); err != nil {
		return fail("unlock (TIOCSPTLCK)", err)
	}
	var n uint32
	if err := ioctl(uintptr(mfd), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); err != nil {
		return fail("get number (TIOCGPTN)", err)
	}
	if err := setSize(uintptr(mfd), cols, rows); err != nil {
		return fail("set size", err)
	}
	name = fmt.Sprintf("/dev/pts/%d", n)
	sfd, err := syscall.Open(name, syscall.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fail("open "+name, err)
	}
	// A non-blocking fd makes os.NewFile register it with the runtime poller.
	if err := syscall.SetNonblock(mfd, true); err != nil {
		syscall.Close(sfd)
		return fail("set non-blocking", err)
	}
	return os.NewFile(uintptr(mfd), "/dev/ptmx"), sfd, name, nil
}

func setSize(fd uintptr, cols, rows uint16) error {
	ws := winsize{Row: rows, Col: cols}
	if err := ioctl(fd, syscall.TIOCSWINSZ, uintptr(unsafe.Pointer(&ws))); err != nil {
		return fmt.Errorf("TIOCSWINSZ %dx%d: %w", cols, rows, err)
	}
	return nil
}

// Resize sets the window size of the pty whose master is f; the kernel sends
// SIGWINCH to the terminal's foreground process group. It does not use
// f.Fd(), which would switch the file to blocking mode.
func Resize(f *os.File, cols, rows uint16) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("resize pty: %w", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = setSize(fd, cols, rows) }); err != nil {
		return fmt.Errorf("resize pty: %w", err)
	}
	return serr
}

// Size returns the window size of the pty whose master is f.
func Size(f *os.File) (cols, rows uint16, err error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, 0, fmt.Errorf("pty size: %w", err)
	}
	var ws winsize
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = ioctl(fd, syscall.TIOCGWINSZ, uintptr(unsafe.Pointer(&ws)))
	}); err != nil {
		return 0, 0, fmt.Errorf("pty size: %w", err)
	}
	if serr != nil {
		return 0, 0, fmt.Errorf("TIOCGWINSZ: %w", serr)
	}
	return ws.Col, ws.Row, nil
}
