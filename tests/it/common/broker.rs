//! A scripted MQTT 3.1.1 server over TLS on loopback, for tests that must send a device what no
//! hub would (a method request without `$rid`, a patch that is not JSON, an unknown topic): the
//! test accepts the device's connection, answers CONNECT and SUBSCRIBE, and then says whatever
//! the test scripts, reading what the device answers.

use std::time::Duration;

use bytes::BytesMut;
use fleetsim::emulator::tls::ServerPki;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, Publish, SubAck, SubscribeReasonCode,
};
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

pub struct ScriptedBroker {
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    /// The root the broker's certificate chains to: clients trust this.
    pub root: CertificateDer<'static>,
}

/// One device's connection to the broker.
pub struct BrokerSession {
    stream: TlsStream<TcpStream>,
    buf: BytesMut,
}

impl ScriptedBroker {
    /// A broker on 127.0.0.1, on a port of its own.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pki = ServerPki::new("scripted broker").unwrap();
        let identity = pki.issue_for(&listener, &[]).unwrap();
        let config = fleetsim::emulator::tls::client_cert_config(identity).unwrap();
        Self {
            listener,
            acceptor: tokio_rustls::TlsAcceptor::from(config),
            root: pki.root_der(),
        }
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.listener.local_addr().unwrap()
    }

    /// The next client, once it has sent CONNECT (answered with CONNACK 0).
    pub async fn accept(&self) -> BrokerSession {
        let (tcp, _) = tokio::time::timeout(Duration::from_secs(20), self.listener.accept())
            .await
            .expect("a client connects")
            .unwrap();
        let stream = self.acceptor.accept(tcp).await.unwrap();
        let mut session = BrokerSession {
            stream,
            buf: BytesMut::new(),
        };
        match session.recv().await {
            Some(Packet::Connect(_)) => {}
            other => panic!("expected CONNECT, got {other:?}"),
        }
        session
            .send(Packet::ConnAck(ConnAck::new(
                ConnectReturnCode::Success,
                false,
            )))
            .await;
        session
    }
}

impl BrokerSession {
    pub async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        packet.write(&mut out, 1 << 20).unwrap();
        self.stream.write_all(&out).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// Sends `bytes` as they are: what no codec would write (truncated, oversize, malformed).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// Ends the connection (TLS close_notify, then the TCP close).
    pub async fn close(mut self) {
        let _ = self.stream.shutdown().await;
    }

    /// The next packet from the client, or `None` when it has closed (10 s at most).
    pub async fn recv(&mut self) -> Option<Packet> {
        let read = async {
            loop {
                match Packet::read(&mut self.buf, 1 << 20) {
                    Ok(p) => return Some(p),
                    Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                    Err(_) => return None,
                }
                let mut chunk = [0u8; 4096];
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .ok()
            .flatten()
    }

    /// Waits for a SUBSCRIBE, grants it (QoS as asked, at most 1) and returns its filters.
    pub async fn grant_subscription(&mut self) -> Vec<String> {
        loop {
            match self.recv().await {
                Some(Packet::Subscribe(s)) => {
                    let codes = s
                        .filters
                        .iter()
                        .map(|f| match f.qos {
                            QoS::AtMostOnce => SubscribeReasonCode::Success(QoS::AtMostOnce),
                            _ => SubscribeReasonCode::Success(QoS::AtLeastOnce),
                        })
                        .collect();
                    self.send(Packet::SubAck(SubAck::new(s.pkid, codes))).await;
                    return s.filters.into_iter().map(|f| f.path).collect();
                }
                Some(Packet::PingReq) => self.send(Packet::PingResp).await,
                Some(other) => panic!("expected SUBSCRIBE, got {other:?}"),
                None => panic!("the client closed before subscribing"),
            }
        }
    }

    /// Sends `payload` on `topic` at QoS 0.
    pub async fn publish(&mut self, topic: &str, payload: &[u8]) {
        let p = Publish::new(topic, QoS::AtMostOnce, payload.to_vec());
        self.send(Packet::Publish(p)).await;
    }

    /// The next PUBLISH from the client (PUBACKed if QoS 1); pings are answered on the way.
    pub async fn next_publish(&mut self) -> Publish {
        loop {
            match self.recv().await {
                Some(Packet::Publish(p)) => {
                    if p.qos == QoS::AtLeastOnce {
                        let ack = rumqttc::mqttbytes::v4::PubAck::new(p.pkid);
                        self.send(Packet::PubAck(ack)).await;
                    }
                    return p;
                }
                Some(Packet::PingReq) => self.send(Packet::PingResp).await,
                Some(_) => continue,
                None => panic!("the client closed the connection"),
            }
        }
    }

    /// The next PUBLISH on a topic starting with `prefix`, acknowledging the rest on the way.
    pub async fn next_publish_on(&mut self, prefix: &str) -> Publish {
        loop {
            let p = self.next_publish().await;
            if p.topic.starts_with(prefix) {
                return p;
            }
        }
    }
}
