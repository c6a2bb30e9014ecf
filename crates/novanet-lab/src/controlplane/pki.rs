//! The control plane's certificates, made with the `openssl` CLI (no TLS library in the lab): a CA, the
//! apiserver's serving certificate, client certificates for each user of the API, and the service-account
//! signing key pair. Keys are ECDSA P-256 (fast to make); the service-account key is RSA 2048, the kind
//! every Kubernetes component and token reviewer accepts.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::error::{ControlPlaneError, Result, io_err};

/// A certificate and its private key (PEM files).
#[derive(Debug, Clone)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What a leaf certificate is for.
pub enum Usage<'a> {
    /// A TLS server reachable at these addresses and DNS names.
    Server {
        ips: &'a [Ipv4Addr],
        dns: &'a [&'a str],
    },
    /// A TLS client: Kubernetes takes the user from CN and the groups from O.
    Client,
}

/// The certificate authority and service-account keys of one control plane, in one directory.
#[derive(Debug, Clone)]
pub struct Pki {
    dir: PathBuf,
    pub ca: CertPair,
    /// RSA private key that signs service-account tokens (apiserver and controller-manager).
    pub sa_key: PathBuf,
    /// Its public half, with which the apiserver verifies them.
    pub sa_pub: PathBuf,
}

impl Pki {
    /// Makes a fresh CA (valid 10 years) and service-account key pair in `dir`.
    pub fn create(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        let ca = CertPair {
            cert: dir.join("ca.crt"),
            key: dir.join("ca.key"),
        };
        let cnf = dir.join("ca.cnf");
        let ca_cnf = "[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = v3_ca\n\
                      [dn]\nCN = novanet-lab-ca\n\
                      [v3_ca]\nbasicConstraints = critical,CA:TRUE\n\
                      keyUsage = critical,keyCertSign,cRLSign,digitalSignature\n\
                      subjectKeyIdentifier = hash\n";
        fs::write(&cnf, ca_cnf).map_err(io_err("write", &cnf))?;
        openssl(&[
            "req",
            "-x509",
            "-new",
            "-nodes",
            "-config",
            s(&cnf),
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-keyout",
            s(&ca.key),
            "-out",
            s(&ca.cert),
            "-days",
            "3650",
        ])?;
        let sa_key = dir.join("sa.key");
        let sa_pub = dir.join("sa.pub");
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            s(&sa_key),
        ])?;
        openssl(&["pkey", "-in", s(&sa_key), "-pubout", "-out", s(&sa_pub)])?;
        Ok(Pki {
            dir: dir.to_path_buf(),
            ca,
            sa_key,
            sa_pub,
        })
    }

    /// Issues `<stem>.crt`/`<stem>.key` signed by the CA (valid 1 year) for `common_name` in the groups
    /// `organizations`.
    pub fn issue(
        &self,
        stem: &str,
        common_name: &str,
        organizations: &[&str],
        usage: Usage<'_>,
    ) -> Result<CertPair> {
        let pair = CertPair {
            cert: self.dir.join(format!("{stem}.crt")),
            key: self.dir.join(format!("{stem}.key")),
        };
        let csr = self.dir.join(format!("{stem}.csr"));
        let ext = self.dir.join(format!("{stem}.ext"));
        let req_cnf = self.dir.join("req.cnf");
        fs::write(&req_cnf, "[req]\ndistinguished_name = dn\n[dn]\n")
            .map_err(io_err("write", &req_cnf))?;
        let mut ext_text = String::from(
            "[v3]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature,keyEncipherment\n\
             authorityKeyIdentifier = keyid\n",
        );
        match usage {
            Usage::Server { ips, dns } => {
                let sans: Vec<String> = ips
                    .iter()
                    .map(|ip| format!("IP:{ip}"))
                    .chain(dns.iter().map(|d| format!("DNS:{d}")))
                    .collect();
                ext_text.push_str("extendedKeyUsage = serverAuth\n");
                ext_text.push_str(&format!("subjectAltName = {}\n", sans.join(",")));
            }
            Usage::Client => ext_text.push_str("extendedKeyUsage = clientAuth\n"),
        }
        fs::write(&ext, ext_text).map_err(io_err("write", &ext))?;
        let mut subject: String = organizations.iter().map(|o| format!("/O={o}")).collect();
        subject.push_str(&format!("/CN={common_name}"));
        openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            s(&pair.key),
        ])?;
        openssl(&[
            "req",
            "-new",
            "-config",
            s(&req_cnf),
            "-key",
            s(&pair.key),
            "-subj",
            &subject,
            "-out",
            s(&csr),
        ])?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            s(&csr),
            "-CA",
            s(&self.ca.cert),
            "-CAkey",
            s(&self.ca.key),
            "-set_serial",
            &serial(),
            "-days",
            "365",
            "-extfile",
            s(&ext),
            "-extensions",
            "v3",
            "-out",
            s(&pair.cert),
        ])?;
        Ok(pair)
    }
}

fn s(p: &Path) -> &str {
    // Work directories are made by the lab from UTF-8 names; a non-UTF-8 path shows up as an openssl error.
    p.to_str().unwrap_or("<non-utf8 path>")
}

/// A serial unique within this process and unlikely to repeat across runs.
fn serial() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "0x{:x}{:04x}{:04x}",
        nanos,
        std::process::id() & 0xffff,
        NEXT.fetch_add(1, Ordering::Relaxed) & 0xffff
    )
}

fn openssl(args: &[&str]) -> Result<()> {
    let mut cmd = Command::new("openssl");
    cmd.args(args);
    let command = format!("openssl {}", args.join(" "));
    let out = cmd
        .output()
        .map_err(|source| ControlPlaneError::CommandSpawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(ControlPlaneError::CommandFailed {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}
