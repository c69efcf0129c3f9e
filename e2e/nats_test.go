package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
	"github.com/parley-im/parley/internal/node"
)

// --nats-url: a node routes through an external NATS server (here a real
// nats-server listening on loopback) exactly as through its in-process one.
func TestExternalNATS(t *testing.T) {
	ns := startNATS(t, &natsserver.Options{})
	s := startServer(t, func(c *node.Config) { c.NATSURL = ns.ClientURL() })
	ctx := ctxT(t, 20*time.Second)
	alice, bob := s.dial("alice", "p"), s.dial("bob", "p")
	if _, err := alice.SendTo(ctx, "bob", "1", "via external nats"); err != nil {
		t.Fatal(err)
	}
	if m := nextMessage(t, bob, 5*time.Second); m.Body != "via external nats" {
		t.Fatalf("bob got %+v", m)
	}
	if n := ns.NumClients(); n != 1 {
		t.Fatalf("external NATS has %d clients, want the node's one", n)
	}
}

// writePEM writes a PEM block to dir/name and returns the path.
func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// testPKI makes a CA and two certificates it signs: one for 127.0.0.1
// (the NATS server) and one client certificate.
func testPKI(t *testing.T, dir string) (ca, serverCert, serverKey, clientCert, clientKey string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "parley test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	issue := func(name string, serial int64, usage x509.ExtKeyUsage, ip bool) (string, string) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, KeyUsage: x509.KeyUsageDigitalSignature,
		}
		if ip {
			tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalECPrivateKey(k)
		return writePEM(t, dir, name+".crt", "CERTIFICATE", der), writePEM(t, dir, name+".key", "EC PRIVATE KEY", kder)
	}
	ca = writePEM(t, dir, "ca.crt", "CERTIFICATE", caDER)
	serverCert, serverKey = issue("server", 2, x509.ExtKeyUsageServerAuth, true)
	clientCert, clientKey = issue("client", 3, x509.ExtKeyUsageClientAuth, false)
	return
}

func startNATS(t *testing.T, opts *natsserver.Options) *natsserver.Server {
	t.Helper()
	opts.Host, opts.Port, opts.NoLog, opts.NoSigs = "127.0.0.1", -1, true, true
	ns, err := natsserver.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("nats not ready")
	}
	return ns
}

// --nats-tls-ca, --nats-tls-cert, --nats-tls-key: a node reaches a NATS
// server that requires TLS with client certificates; without the client
// certificate, or without trusting the CA, it refuses to start.
func TestNATSMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, sc, sk, cc, ck := testPKI(t, dir)
	tc, err := natsserver.GenTLSConfig(&natsserver.TLSConfigOpts{CertFile: sc, KeyFile: sk, CaFile: ca, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	ns := startNATS(t, &natsserver.Options{TLSConfig: tc, TLSVerify: true, TLSTimeout: 2})
	url := "tls://" + ns.Addr().String()

	s := startServer(t, func(c *node.Config) {
		c.NATSURL, c.NATSTLSCA, c.NATSTLSCert, c.NATSTLSKey = url, ca, cc, ck
	})
	ctx := ctxT(t, 20*time.Second)
	alice, bob := s.dial("alice", "p"), s.dial("bob", "p")
	if _, err := alice.SendTo(ctx, "bob", "1", "over tls"); err != nil {
		t.Fatal(err)
	}
	if m := nextMessage(t, bob, 5*time.Second); m.Body != "over tls" {
		t.Fatalf("bob got %+v", m)
	}
	for name, mod := range map[string]func(*node.Config){
		"no client certificate": func(c *node.Config) { c.NATSURL, c.NATSTLSCA = url, ca },
		"CA not trusted":        func(c *node.Config) { c.NATSURL, c.NATSTLSCert, c.NATSTLSKey = url, cc, ck },
		"key without cert":      func(c *node.Config) { c.NATSURL, c.NATSTLSCA, c.NATSTLSKey = url, ca, ck },
	} {
		cfg := node.Config{Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", DataDir: t.TempDir(), Dev: "true", Logger: quiet(t)}
		mod(&cfg)
		if n, err := node.Start(cfg); err == nil {
			_ = n.Shutdown(context.Background())
			t.Errorf("%s: node started", name)
		}
	}
}

// --nats-creds: a node authenticates to a NATS server in operator mode
// with a user JWT and nkey seed; a user of another operator is refused.
func TestNATSCredentials(t *testing.T) {
	dir := t.TempDir()
	okp, _ := nkeys.CreateOperator()
	opub, _ := okp.PublicKey()
	oc := jwt.NewOperatorClaims(opub)
	ojwt, err := oc.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	akp, _ := nkeys.CreateAccount()
	apub, _ := akp.PublicKey()
	ac := jwt.NewAccountClaims(apub)
	ajwt, err := ac.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	creds := func(name string, signer nkeys.KeyPair) string {
		ukp, _ := nkeys.CreateUser()
		upub, _ := ukp.PublicKey()
		uc := jwt.NewUserClaims(upub)
		uc.IssuerAccount = apub
		ujwt, err := uc.Encode(signer)
		if err != nil {
			t.Fatal(err)
		}
		seed, _ := ukp.Seed()
		b, err := jwt.FormatUserConfig(ujwt, seed)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name+".creds")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := creds("good", akp)
	stranger, _ := nkeys.CreateAccount()
	bad := creds("bad", stranger)

	op, err := jwt.DecodeOperatorClaims(ojwt)
	if err != nil {
		t.Fatal(err)
	}
	res := &natsserver.MemAccResolver{}
	if err := res.Store(apub, ajwt); err != nil {
		t.Fatal(err)
	}
	ns := startNATS(t, &natsserver.Options{TrustedOperators: []*jwt.OperatorClaims{op}, AccountResolver: res})

	s := startServer(t, func(c *node.Config) { c.NATSURL, c.NATSCreds = ns.ClientURL(), good })
	ctx := ctxT(t, 20*time.Second)
	alice, bob := s.dial("alice", "p"), s.dial("bob", "p")
	if _, err := alice.SendTo(ctx, "bob", "1", "with creds"); err != nil {
		t.Fatal(err)
	}
	if m := nextMessage(t, bob, 5*time.Second); m.Body != "with creds" {
		t.Fatalf("bob got %+v", m)
	}
	cfg := node.Config{Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", DataDir: t.TempDir(), Dev: "true", Logger: quiet(t),
		NATSURL: ns.ClientURL(), NATSCreds: bad}
	if n, err := node.Start(cfg); err == nil {
		_ = n.Shutdown(context.Background())
		t.Fatal("a user signed by an unknown account was let in")
	}
}
