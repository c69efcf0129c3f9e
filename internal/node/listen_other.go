//go:build !linux

package node

import "net"

// listenClients opens the client listener (see listen_linux.go).
func listenClients(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }
