//! `ssa data download` and `data.download` against a local HTTP server on 127.0.0.1 that serves
//! an archive built from the fixture, a corrupted copy, and a transfer cut short.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use assert_cmd::Command;
use md5::{Digest, Md5};
use predicates::str::contains;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cifar10")
}

/// A .tar.gz with the fixture under `cifar-10-batches-bin/`, as the official archive lays it out.
fn fixture_archive() -> Vec<u8> {
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(encoder);
    builder.append_dir_all("cifar-10-batches-bin", fixture()).unwrap();
    builder.into_inner().unwrap().finish().unwrap()
}

fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Serves `requests` connections: `/good` the archive, `/corrupt` it with one byte changed,
/// `/short` half of it under the full Content-Length, anything else 404.
fn serve(archive: Vec<u8>, requests: usize) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        for stream in listener.incoming().take(requests) {
            let mut stream = stream.unwrap();
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
                request.push(byte[0]);
            }
            let line = String::from_utf8_lossy(&request).lines().next().unwrap_or("").to_string();
            let path = line.split_whitespace().nth(1).unwrap_or("");
            let (status, body, sent) = match path {
                "/good" => ("200 OK", archive.clone(), archive.len()),
                "/corrupt" => {
                    let mut body = archive.clone();
                    let middle = body.len() / 2;
                    body[middle] ^= 0xff;
                    ("200 OK", body, archive.len())
                }
                "/short" => ("200 OK", archive.clone(), archive.len() / 2),
                _ => ("404 Not Found", Vec::new(), 0),
            };
            let header = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = stream.write_all(header.as_bytes());
            let _ = stream.write_all(&body[..sent]);
            let _ = stream.flush();
        }
    });
    (address, handle)
}

fn download(dir: &Path, url: &str, md5: &str) -> assert_cmd::assert::Assert {
    Command::cargo_bin("ssa")
        .unwrap()
        .args(["data", "download", "cifar10", "--dir"])
        .arg(dir)
        .args(["--url", url, "--md5", md5])
        .assert()
}

/// Lists what a failed download left in `dir`.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| entries.map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn download_verifies_and_extracts() {
    let archive = fixture_archive();
    let md5 = md5_hex(&archive);
    let (address, server) = serve(archive, 5);
    let dir = tempfile::tempdir().unwrap();

    // A failed download into a --dir that did not exist leaves no empty directory.
    let fresh = dir.path().join("fresh");
    download(&fresh, &format!("{address}/corrupt"), &md5).failure();
    assert!(!fresh.exists(), "the failed download left {}", fresh.display());

    download(dir.path(), &format!("{address}/corrupt"), &md5)
        .failure()
        .stderr(contains("checksum mismatch"));
    assert!(leftovers(dir.path()).is_empty(), "corrupt download left {:?}", leftovers(dir.path()));

    download(dir.path(), &format!("{address}/short"), &md5).failure().stderr(contains("download failed"));
    assert!(leftovers(dir.path()).is_empty(), "cut transfer left {:?}", leftovers(dir.path()));

    download(dir.path(), &format!("{address}/missing"), &md5).failure().stderr(contains("404"));
    assert!(leftovers(dir.path()).is_empty());

    download(dir.path(), &format!("{address}/good"), &md5)
        .success()
        .stdout(contains("cifar-10-batches-bin"));
    assert_eq!(leftovers(dir.path()), vec!["cifar-10-batches-bin".to_string()]);
    let extracted = dir.path().join("cifar-10-batches-bin");
    for name in ["data_batch_1.bin", "data_batch_5.bin", "test_batch.bin"] {
        let original = std::fs::read(fixture().join(name)).unwrap();
        assert_eq!(std::fs::read(extracted.join(name)).unwrap(), original, "{name} differs");
    }
    server.join().unwrap();
}

#[test]
fn train_downloads_missing_data() {
    let archive = fixture_archive();
    let md5 = md5_hex(&archive);
    let (address, server) = serve(archive, 1);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data/cifar10");
    Command::cargo_bin("ssa")
        .unwrap()
        .args(["train", "--config"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/smoke.toml"))
        .arg("--data-dir")
        .arg(&data)
        .arg("--out")
        .arg(dir.path().join("runs"))
        .args(["--set", "train.epochs=1", "--set", "model.width=0.125", "--set", "data.test_limit=100"])
        .args(["--set", "data.download=true"])
        .args(["--set", &format!("data.download_url=\"{address}/good\""), "--set", &format!("data.download_md5=\"{md5}\"")])
        .assert()
        .success();
    assert!(data.join("test_batch.bin").is_file());
    server.join().unwrap();
}

#[test]
fn missing_data_without_download_names_command() {
    let dir = tempfile::tempdir().unwrap();
    Command::cargo_bin("ssa")
        .unwrap()
        .args(["train", "--config"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/smoke.toml"))
        .arg("--data-dir")
        .arg(dir.path().join("absent"))
        .arg("--out")
        .arg(dir.path().join("runs"))
        .assert()
        .failure()
        .stderr(contains("absent"))
        .stderr(contains("ssa data download cifar10"));
}
