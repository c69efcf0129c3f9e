package node

import (
	"net"
	"syscall"
	"testing"
)

// Accepted client connections carry the keepalive settings net would have
// set on each of them.
func TestListenClientsKeepAlive(t *testing.T) {
	ln, err := listenClients("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][3]int{
		"SO_KEEPALIVE":  {syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
		"TCP_KEEPIDLE":  {syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, 15},
		"TCP_KEEPINTVL": {syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, 15},
		"TCP_KEEPCNT":   {syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, 9},
		"TCP_NODELAY":   {syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1},
	}
	if err := rc.Control(func(fd uintptr) {
		for name, o := range want {
			v, err := syscall.GetsockoptInt(int(fd), o[0], o[1])
			if err != nil || v != o[2] {
				t.Errorf("%s = %d (%v), want %d", name, v, err, o[2])
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
}
