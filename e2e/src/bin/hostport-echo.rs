//! The program of the real-node scenarios' pods: answers every TCP connection and every UDP
//! datagram on `LISTEN` (default `0.0.0.0:8080`) with `host port <HOST_PORT>` and a newline,
//! `HOST_PORT` being what the pod read from its `port.hostport.rmb938.com/<name>` annotation
//! through the downward API. A client that reaches the node's host port and reads the same
//! number back has proven the whole data path: allocation, admission, the CNI's port
//! forward and the annotation the pod was given. With `EXIT=1` it prints that line and exits
//! at once (the pod of a scenario about finished pods). With `PUBLIC_FILE` (a downward-API
//! volume file of the `external.hostport.rmb938.com/<name>` annotation) each answer adds a
//! line `public <what the file says now>`: the kubelet's refresh of the file, seen by the
//! program.
//!
//! Standard library only, so its image (`registry.invalid/hostport-echo:1`, `hack/images.sh --echo`) is the binary and libc.

use std::io::Write;
use std::net::{TcpListener, UdpSocket};

fn main() -> std::io::Result<()> {
    // A program that finishes (a Job's, a completed pod's): says its port and exits.
    if std::env::var("EXIT").is_ok_and(|v| v == "1") {
        println!(
            "host port {}",
            std::env::var("HOST_PORT").unwrap_or_default()
        );
        return Ok(());
    }
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "0.0.0.0:8080".into());
    let port = std::env::var("HOST_PORT").unwrap_or_default();
    let public_file = std::env::var("PUBLIC_FILE").ok();
    let answer = move || match &public_file {
        Some(path) => format!(
            "host port {port}\npublic {}\n",
            std::fs::read_to_string(path).unwrap_or_default().trim()
        ),
        None => format!("host port {port}\n"),
    };
    let udp = UdpSocket::bind(&listen)?;
    let tcp = TcpListener::bind(&listen)?;
    eprintln!("answering `{}` on {listen} (tcp, udp)", answer().trim_end());
    let datagram_answer = answer.clone();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 512];
        loop {
            match udp.recv_from(&mut buffer) {
                Ok((_, peer)) => {
                    if let Err(error) = udp.send_to(datagram_answer().as_bytes(), peer) {
                        eprintln!("udp answer to {peer}: {error}");
                    }
                }
                Err(error) => eprintln!("udp: {error}"),
            }
        }
    });
    for stream in tcp.incoming() {
        match stream {
            Ok(mut stream) => {
                if let Err(error) = stream.write_all(answer().as_bytes()) {
                    eprintln!("tcp answer: {error}");
                }
            }
            Err(error) => eprintln!("tcp accept: {error}"),
        }
    }
    Ok(())
}
