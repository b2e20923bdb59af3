//! What a certificate request names, parsed once into the form both the ownership check and the
//! certificate builder read, so the name checked is exactly the name certified (issue #18: a
//! `SubjectName` with two CNs once had its first one checked and its last one signed).
//!
//! `SubjectName` is an RFC 4514 string: RDNs separated by `,`, attribute `type=value`, values
//! escaped with `\` (a special character or two hex digits) or quoted with `"`. The template
//! allows what an SSL template of a device fleet needs and refuses the rest:
//! - exactly one `CN`; at most one each of `O`, `OU`, `L`, `ST`, `C`; nothing else;
//! - no multi-valued RDN (`CN=a+O=b`), no `;` separator, no `#`-encoded BER value;
//! - values non-empty, without control characters, within the sizes below.
//!
//! Sizes (EZCA documents none, so these are ours): `CN` up to 128 characters, which is IoT Hub's
//! device-id limit (a device's CN is its id); the other attributes at RFC 5280's upper bounds
//! (`O`, `OU` 64, `L`, `ST` 128, `C` two letters); the whole `SubjectName` 1024 bytes. At most 100
//! SANs (Let's Encrypt's limit per certificate); a DNS name up to 253 characters in labels of at
//! most 63 (RFC 1035), an e-mail address up to 254 (RFC 5321), a URI up to 1024.
//!
//! Every SAN names something the caller must own or request for, as the CN does: a DNS SAN its
//! name, an e-mail SAN the domain after `@`, a URI SAN its host (a URI without one, such as a URN,
//! is refused), an IP SAN the address as text.

use std::net::IpAddr;

use rcgen::{DistinguishedName, DnType, SanType};

use crate::ezca::models::{SAN_DNS, SAN_EMAIL, SAN_IP, SAN_URI, SubjectAltValue};

/// The longest `SubjectName` read.
pub const MAX_SUBJECT_BYTES: usize = 1024;
/// The most SANs one certificate carries.
pub const MAX_SANS: usize = 100;
const MAX_DNS: usize = 253;
const MAX_LABEL: usize = 63;
const MAX_EMAIL: usize = 254;
const MAX_URI: usize = 1024;

/// Why a request was refused; the text goes back to the client in `Message`. (Here, at the
/// bottom of the CA's files, because names and signing both refuse.)
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

fn refuse(msg: impl Into<String>) -> Refusal {
    Refusal(msg.into())
}

/// The subject attributes the template allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribute {
    CommonName,
    Organization,
    OrganizationalUnit,
    Locality,
    State,
    Country,
}

impl Attribute {
    const ALL: [Attribute; 6] = [
        Attribute::CommonName,
        Attribute::Organization,
        Attribute::OrganizationalUnit,
        Attribute::Locality,
        Attribute::State,
        Attribute::Country,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Attribute::CommonName => "CN",
            Attribute::Organization => "O",
            Attribute::OrganizationalUnit => "OU",
            Attribute::Locality => "L",
            Attribute::State => "ST",
            Attribute::Country => "C",
        }
    }

    fn from_key(key: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.key().eq_ignore_ascii_case(key))
    }

    fn dn_type(self) -> DnType {
        match self {
            Attribute::CommonName => DnType::CommonName,
            Attribute::Organization => DnType::OrganizationName,
            Attribute::OrganizationalUnit => DnType::OrganizationalUnitName,
            Attribute::Locality => DnType::LocalityName,
            Attribute::State => DnType::StateOrProvinceName,
            Attribute::Country => DnType::CountryName,
        }
    }

    fn from_oid(oid: &x509_parser::der_parser::oid::Oid) -> Option<Self> {
        use x509_parser::oid_registry as o;
        Some(match oid {
            x if *x == o::OID_X509_COMMON_NAME => Attribute::CommonName,
            x if *x == o::OID_X509_ORGANIZATION_NAME => Attribute::Organization,
            x if *x == o::OID_X509_ORGANIZATIONAL_UNIT => Attribute::OrganizationalUnit,
            x if *x == o::OID_X509_LOCALITY_NAME => Attribute::Locality,
            x if *x == o::OID_X509_STATE_OR_PROVINCE_NAME => Attribute::State,
            x if *x == o::OID_X509_COUNTRY_NAME => Attribute::Country,
            _ => return None,
        })
    }

    /// The longest value, in characters.
    fn max_chars(self) -> usize {
        match self {
            Attribute::CommonName | Attribute::Locality | Attribute::State => 128,
            Attribute::Organization | Attribute::OrganizationalUnit => 64,
            Attribute::Country => 2,
        }
    }
}

/// A certificate subject the template allows: one CN, each other attribute at most once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    attributes: Vec<(Attribute, String)>,
}

impl Subject {
    /// Parses and checks a request's `SubjectName`.
    pub fn parse(subject_name: &str) -> Result<Self, Refusal> {
        if subject_name.len() > MAX_SUBJECT_BYTES {
            return Err(refuse(format!(
                "SubjectName is longer than {MAX_SUBJECT_BYTES} bytes"
            )));
        }
        let mut attributes = Vec::new();
        for rdn in super::rfc4514::parse(subject_name).map_err(|e| refuse(e.to_string()))? {
            let [(key, value)] = <[_; 1]>::try_from(rdn).map_err(|_| {
                refuse(
                    "SubjectName has a multi-valued RDN ('+'), which this template does not allow",
                )
            })?;
            let attribute = Attribute::from_key(&key).ok_or_else(|| {
                refuse(format!(
                    "SubjectName attribute {key} is not allowed by this template"
                ))
            })?;
            attributes.push((attribute, value));
        }
        Self::checked(attributes)
    }

    /// A subject of `attributes`, checked against the template.
    fn checked(attributes: Vec<(Attribute, String)>) -> Result<Self, Refusal> {
        for (i, (attribute, value)) in attributes.iter().enumerate() {
            let key = attribute.key();
            if attributes[..i].iter().any(|(a, _)| a == attribute) {
                return Err(refuse(format!("SubjectName has more than one {key}")));
            }
            check_value(*attribute, value)?;
        }
        if !attributes.iter().any(|(a, _)| *a == Attribute::CommonName) {
            return Err(refuse("SubjectName must contain CN="));
        }
        Ok(Self { attributes })
    }

    /// The subject of a certificate this CA issued (its attributes are the template's).
    pub fn from_x509(name: &x509_parser::x509::X509Name) -> Option<Self> {
        let mut attributes = Vec::new();
        for rdn in name.iter() {
            let [attr] = <[_; 1]>::try_from(rdn.iter().collect::<Vec<_>>()).ok()?;
            let attribute = Attribute::from_oid(attr.attr_type())?;
            attributes.push((attribute, attr.as_str().ok()?.to_string()));
        }
        Self::checked(attributes).ok()
    }

    /// The one common name: the name ownership is checked on and the device id.
    pub fn common_name(&self) -> &str {
        self.attributes
            .iter()
            .find(|(a, _)| *a == Attribute::CommonName)
            .map_or("", |(_, v)| v.as_str())
    }

    pub fn attributes(&self) -> &[(Attribute, String)] {
        &self.attributes
    }

    pub fn to_distinguished_name(&self) -> DistinguishedName {
        let mut dn = DistinguishedName::new();
        for (attribute, value) in &self.attributes {
            dn.push(attribute.dn_type(), value.as_str());
        }
        dn
    }
}

fn check_value(attribute: Attribute, value: &str) -> Result<(), Refusal> {
    let key = attribute.key();
    if value.is_empty() {
        return Err(refuse(format!("SubjectName {key} is empty")));
    }
    if value.chars().any(char::is_control) {
        return Err(refuse(format!(
            "SubjectName {key} contains a control character"
        )));
    }
    let max = attribute.max_chars();
    if value.chars().count() > max {
        return Err(refuse(format!(
            "SubjectName {key} is longer than {max} characters"
        )));
    }
    if attribute == Attribute::Country && !value.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(refuse("SubjectName C must be a two-letter country code"));
    }
    Ok(())
}

/// A subject alternative name the template allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum San {
    Dns(String),
    Email(String),
    Uri(String),
    Ip(IpAddr),
}

impl San {
    /// A V2 request's typed SAN.
    pub fn from_request(v: &SubjectAltValue) -> Result<Self, Refusal> {
        match v.kind {
            SAN_DNS => Self::dns(&v.value),
            SAN_EMAIL => Self::email(&v.value),
            SAN_URI => Self::uri(&v.value),
            SAN_IP => {
                v.value.trim().parse().map(San::Ip).map_err(|_| {
                    refuse(format!("SubjectAltName {:?} is not an IP address", v.value))
                })
            }
            other => Err(refuse(format!("SubjectAltType {other} is not supported"))),
        }
    }

    pub fn dns(name: &str) -> Result<Self, Refusal> {
        check_dns(name)?;
        Ok(San::Dns(name.to_string()))
    }

    fn email(address: &str) -> Result<Self, Refusal> {
        let bad = || {
            refuse(format!(
                "SubjectAltName {address:?} is not an e-mail address"
            ))
        };
        if address.len() > MAX_EMAIL || !graphic_ascii(address) {
            return Err(bad());
        }
        let (local, domain) = address.split_once('@').ok_or_else(bad)?;
        if local.is_empty() || domain.contains('@') {
            return Err(bad());
        }
        check_dns(domain)?;
        Ok(San::Email(address.to_string()))
    }

    fn uri(uri: &str) -> Result<Self, Refusal> {
        if uri.len() > MAX_URI || !graphic_ascii(uri) {
            return Err(refuse(format!(
                "SubjectAltName URI is longer than {MAX_URI} characters or not printable ASCII"
            )));
        }
        uri_host(uri)?;
        Ok(San::Uri(uri.to_string()))
    }

    /// The name the caller must own or request for, as domains are registered (lower case).
    pub fn owned_name(&self) -> String {
        match self {
            San::Dns(name) => name.to_ascii_lowercase(),
            San::Email(address) => address
                .rsplit_once('@')
                .map_or("", |(_, domain)| domain)
                .to_ascii_lowercase(),
            San::Uri(uri) => uri_host(uri).unwrap_or_default().to_ascii_lowercase(),
            San::Ip(ip) => ip.to_string(),
        }
    }

    pub fn to_san_type(&self) -> Result<SanType, Refusal> {
        let invalid = || refuse("a subject alternative name is not valid IA5 text");
        Ok(match self {
            San::Dns(n) => SanType::DnsName(n.clone().try_into().map_err(|_| invalid())?),
            San::Email(a) => SanType::Rfc822Name(a.clone().try_into().map_err(|_| invalid())?),
            San::Uri(u) => SanType::URI(u.clone().try_into().map_err(|_| invalid())?),
            San::Ip(ip) => SanType::IpAddress(*ip),
        })
    }

    /// A SAN of a certificate (or CSR) this CA reads; `None` for kinds the template has not.
    pub fn from_general_name(name: &x509_parser::extensions::GeneralName) -> Option<Self> {
        use x509_parser::extensions::GeneralName as G;
        Some(match name {
            G::DNSName(d) => San::Dns(d.to_string()),
            G::RFC822Name(e) => San::Email(e.to_string()),
            G::URI(u) => San::Uri(u.to_string()),
            G::IPAddress(bytes) => San::Ip(match bytes.len() {
                4 => IpAddr::from(<[u8; 4]>::try_from(*bytes).ok()?),
                16 => IpAddr::from(<[u8; 16]>::try_from(*bytes).ok()?),
                _ => return None,
            }),
            _ => return None,
        })
    }

    /// Whether two SANs name the same thing (DNS names and e-mail domains ignore case).
    pub fn same_as(&self, other: &San) -> bool {
        match (self, other) {
            (San::Dns(a), San::Dns(b)) => a.eq_ignore_ascii_case(b),
            (San::Email(a), San::Email(b)) => a.eq_ignore_ascii_case(b),
            (a, b) => a == b,
        }
    }
}

/// Parses a request's SANs (V1 DNS names, V2 typed values) and checks their number.
pub fn parse_sans<'a>(
    dns: impl IntoIterator<Item = &'a String>,
    typed: &[SubjectAltValue],
) -> Result<Vec<San>, Refusal> {
    let mut sans = Vec::new();
    for name in dns {
        sans.push(San::dns(name)?);
        if sans.len() > MAX_SANS {
            break;
        }
    }
    for value in typed {
        if sans.len() > MAX_SANS {
            break;
        }
        sans.push(San::from_request(value)?);
    }
    if sans.len() > MAX_SANS {
        return Err(refuse(format!(
            "a certificate carries at most {MAX_SANS} subject alternative names"
        )));
    }
    Ok(sans)
}

fn graphic_ascii(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic())
}

fn check_dns(name: &str) -> Result<(), Refusal> {
    let bad = |why: &str| refuse(format!("SubjectAltName {name:?} is not a DNS name: {why}"));
    if name.len() > MAX_DNS {
        return Err(bad(&format!("longer than {MAX_DNS} characters")));
    }
    if !graphic_ascii(name) {
        return Err(bad("empty, or not printable ASCII"));
    }
    if name
        .trim_end_matches('.')
        .split('.')
        .any(|label| label.is_empty() || label.len() > MAX_LABEL)
    {
        return Err(bad(&format!("labels must be 1 to {MAX_LABEL} characters")));
    }
    Ok(())
}

/// The host of `scheme://[userinfo@]host[:port][/...]`.
fn uri_host(uri: &str) -> Result<&str, Refusal> {
    let no_host = || {
        refuse(format!(
            "SubjectAltName URI {uri:?} names no host (scheme://host/...), so no domain owns it"
        ))
    };
    let (scheme, rest) = uri.split_once("://").ok_or_else(no_host)?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return Err(no_host());
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map(|(h, _)| h).ok_or_else(no_host)?,
        None => host_port.split(':').next().unwrap_or_default(),
    };
    if host.is_empty() {
        return Err(no_host());
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cn(s: &str) -> Result<String, String> {
        Subject::parse(s)
            .map(|s| s.common_name().to_string())
            .map_err(|r| r.0)
    }

    #[test]
    fn one_common_name_whatever_the_syntax() {
        assert_eq!(cn("CN=d1").unwrap(), "d1");
        assert_eq!(cn(" cn = d1 , O=Contoso").unwrap(), "d1");
        assert_eq!(cn("CN=a\\,b\\+c").unwrap(), "a,b+c");
        assert_eq!(cn("CN=\"a,b+c\"").unwrap(), "a,b+c");
        assert_eq!(cn("CN=a\\2Cb").unwrap(), "a,b");
        assert_eq!(cn("CN=x=y").unwrap(), "x=y");
        assert_eq!(cn("CN=caf\\C3\\A9").unwrap(), "café");
        for bad in [
            "CN=a, CN=b",
            "CN=a+CN=b",
            "CN=a+O=b",
            "CN=a;CN=b",
            "O=a",
            "CN=",
            "CN=a, X=b",
            "CN=#0403616263",
            "CN=a\\",
            "CN=a\\zz",
            "CN=\"a",
            "CN=\"a\"b",
            "CN=a\\FF",
            "CN=a, C=SWE",
            "CN=a, C=1A",
        ] {
            assert!(cn(bad).is_err(), "{bad:?} was accepted as {:?}", cn(bad));
        }
        // What the EZCA client writes for any device id reads back as that id.
        for id in [
            "a,b",
            "x+y=z;w",
            " lead",
            "trail ",
            "#hash",
            "q\"uote\\",
            "a<b>c",
        ] {
            let subject = crate::ezca::models::subject_name_for(id);
            assert_eq!(cn(&subject).unwrap(), id, "{subject}");
        }
        assert!(cn(&format!("CN={}", "a".repeat(128))).is_ok());
        assert!(cn(&format!("CN={}", "a".repeat(129))).is_err());
        assert!(cn(&format!("CN=a, O={}", "é".repeat(64))).is_ok());
        assert!(cn(&format!("CN=a, O={}", "é".repeat(65))).is_err());
    }

    #[test]
    fn every_san_names_what_must_be_owned() {
        let typed = |kind, value: &str| SubjectAltValue {
            value: value.into(),
            kind,
        };
        let owned = |v: SubjectAltValue| San::from_request(&v).map(|s| s.owned_name());
        assert_eq!(owned(typed(SAN_DNS, "D1")).unwrap(), "d1");
        assert_eq!(owned(typed(SAN_EMAIL, "ops@Mine-1")).unwrap(), "mine-1");
        assert_eq!(
            owned(typed(SAN_URI, "spiffe://u@mine-1:8/x")).unwrap(),
            "mine-1"
        );
        assert_eq!(owned(typed(SAN_URI, "https://[::1]/x")).unwrap(), "::1");
        assert_eq!(owned(typed(SAN_IP, "127.0.0.7")).unwrap(), "127.0.0.7");
        for bad in [
            typed(SAN_EMAIL, "a@b@c"),
            typed(SAN_EMAIL, "@b"),
            typed(SAN_URI, "urn:victim-1"),
            typed(SAN_URI, "https:///x"),
            typed(SAN_IP, "victim-1"),
            typed(SAN_DNS, "a b"),
            typed(SAN_DNS, &format!("{}.b", "a".repeat(64))),
            typed(3, "x"),
        ] {
            assert!(San::from_request(&bad).is_err(), "{bad:?}");
        }
        let many: Vec<String> = (0..=MAX_SANS).map(|i| format!("d{i}")).collect();
        assert!(parse_sans(&many, &[]).is_err());
        assert!(parse_sans(&many[..MAX_SANS], &[]).is_ok());
    }
}
