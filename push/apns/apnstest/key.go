package apnstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// Key is a test APNs token-signing key, like the .p8 file, key id and team
// id a developer downloads from Apple.
type Key struct {
	Private *ecdsa.PrivateKey
	File    string // the .p8 file: PKCS#8 PEM, "PRIVATE KEY"
	KeyID   string // 10 characters, like Apple's
	TeamID  string // 10 characters, like Apple's
}

// GenerateKey makes a P-256 key and writes it as AuthKey_<KeyID>.p8 in dir.
func GenerateKey(dir string) (*Key, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	k := &Key{Private: priv, KeyID: randomID(), TeamID: randomID()}
	k.File = filepath.Join(dir, "AuthKey_"+k.KeyID+".p8")
	if err := writePEM(k.File, "PRIVATE KEY", der); err != nil {
		return nil, err
	}
	return k, nil
}

// ClientCert is a test provider certificate for certificate auth, issued by
// its own CA (give CAs to Options.ClientCAs).
type ClientCert struct {
	CAs      *x509.CertPool
	Leaf     *x509.Certificate
	CertFile string // PEM certificate
	KeyFile  string // PEM PKCS#8 key, separate from CertFile
	// CombinedFile holds the certificate and key in one PEM file, the way
	// Apple's .p12 exported to PEM usually looks.
	CombinedFile string
}

// GenerateClientCert makes a CA and a client certificate for topic (its
// subject UID, as in Apple's certificates) and writes the PEM files in dir.
func GenerateClientCert(dir, topic string) (*ClientCert, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "apnstest CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject: pkix.Name{
			CommonName: "Apple Push Services: " + topic,
			ExtraNames: []pkix.AttributeTypeAndValue{{Type: oidUID, Value: topic}},
		},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	c := &ClientCert{
		CAs:          x509.NewCertPool(),
		Leaf:         leaf,
		CertFile:     filepath.Join(dir, "cert.pem"),
		KeyFile:      filepath.Join(dir, "key.pem"),
		CombinedFile: filepath.Join(dir, "combined.pem"),
	}
	c.CAs.AddCert(ca)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	for _, f := range []struct {
		name string
		data []byte
	}{
		{c.CertFile, certPEM},
		{c.KeyFile, keyPEM},
		{c.CombinedFile, append(append([]byte{}, certPEM...), keyPEM...)},
	} {
		if err := os.WriteFile(f.name, f.data, 0o600); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// oidUID is the LDAP userid attribute Apple puts the bundle id in.
var oidUID = asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 1}

func writePEM(name, typ string, der []byte) error {
	return os.WriteFile(name, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

// randomID returns 10 random characters of [A-Z0-9], the shape of Apple's
// key and team ids.
func randomID() string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	b := make([]byte, 10)
	for i := range b {
		n, err := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
		if err != nil {
			panic(err) // crypto/rand does not fail
		}
		b[i] = alphabet[n.Int64()]
	}
	return string(b)
}
