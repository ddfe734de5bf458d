//! Durability: purchases acknowledged by the real `loyalty` binary survive `kill -9`.
//! The server runs on SQLite (WAL, synchronous=FULL) under concurrent purchases, is killed
//! with SIGKILL mid-stream, and restarted on the same file: every purchase that got a 201
//! is there, a retry of its request answers the same bytes, and `loyalty verify` passes.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const OPERATOR_KEY: &str = "durability-operator-key";
/// Purchases acknowledged before the kill, at least.
const ACKNOWLEDGED_BEFORE_KILL_MIN: usize = 200;
const CLIENTS: usize = 16;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("bound")
        .port()
}

fn start(database: &str, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_loyalty"))
        .args([
            "serve",
            "--database",
            database,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("LOYALTY_OPERATOR_KEY", OPERATOR_KEY)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the loyalty binary starts")
}

async fn wait_healthy(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(response) = client.get(format!("{base}/healthz")).send().await {
            if response.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server did not become healthy");
}

async fn post(client: &reqwest::Client, url: &str, key: &str, body: &Value) -> Value {
    let response = client
        .post(url)
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .expect("the server answers");
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    response.json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_purchases_survive_kill_9() {
    let directory = std::env::temp_dir().join(format!("loyalty-durability-{}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("temp dir");
    let database = format!("sqlite://{}", directory.join("durable.db").display());
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();

    let mut server = start(&database, port);
    wait_healthy(&client, &base).await;
    let merchant = post(
        &client,
        &format!("{base}/v1/merchants"),
        OPERATOR_KEY,
        &json!({"name": "Durable", "currency": "CNY"}),
    )
    .await;
    let key = merchant["api_key"].as_str().expect("key").to_string();
    let store = post(
        &client,
        &format!("{base}/v1/stores"),
        &key,
        &json!({"code": "S1", "name": "One"}),
    )
    .await;
    let store = store["id"].as_str().expect("store id").to_string();
    let mut members = Vec::new();
    for index in 0..4 {
        let member = post(
            &client,
            &format!("{base}/v1/members"),
            &key,
            &json!({"external_id": format!("m{index}")}),
        )
        .await;
        members.push(member["id"].as_str().expect("member id").to_string());
    }

    // (idempotency key, request body, response bytes) of every acknowledged purchase
    let acknowledged: Arc<Mutex<Vec<(String, Value, String)>>> = Arc::default();
    let mut clients = Vec::new();
    for client_index in 0..CLIENTS {
        let (client, base, key, store, members, acknowledged) = (
            client.clone(),
            base.clone(),
            key.clone(),
            store.clone(),
            members.clone(),
            acknowledged.clone(),
        );
        clients.push(tokio::spawn(async move {
            for sequence in 0..100_000 {
                let idempotency_key = format!("c{client_index}-{sequence}");
                let quantity = 1 + sequence % 3;
                let cents = 1250 * quantity;
                let body = json!({
                    "member_id": members[sequence % members.len()],
                    "store_id": store,
                    "items": [{"sku": "TEA", "quantity": quantity, "unit_price": "12.50"}],
                    "payments": [{"method": "cash", "amount": format!("{}.{:02}", cents / 100, cents % 100)}],
                });
                let sent = client
                    .post(format!("{base}/v1/purchases"))
                    .bearer_auth(&key)
                    .header("Idempotency-Key", &idempotency_key)
                    .json(&body)
                    .send()
                    .await;
                // After the kill, requests fail: that client is done.
                let Ok(response) = sent else { return };
                if response.status().as_u16() != 201 {
                    return;
                }
                let Ok(text) = response.text().await else { return };
                acknowledged
                    .lock()
                    .expect("not poisoned")
                    .push((idempotency_key, body, text));
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while acknowledged.lock().expect("not poisoned").len() < ACKNOWLEDGED_BEFORE_KILL_MIN {
        assert!(Instant::now() < deadline, "too few purchases acknowledged");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // SIGKILL while purchases are in flight: no shutdown, no flush.
    server.kill().expect("kill -9 the server");
    server.wait().expect("the server is gone");
    for client in clients {
        client.await.expect("client task");
    }
    let acknowledged = acknowledged.lock().expect("not poisoned").clone();
    assert!(acknowledged.len() >= ACKNOWLEDGED_BEFORE_KILL_MIN);

    let mut server = start(&database, port);
    wait_healthy(&client, &base).await;
    for (idempotency_key, body, first_answer) in &acknowledged {
        let first: Value = serde_json::from_str(first_answer).expect("json");
        let purchase = client
            .get(format!(
                "{base}/v1/purchases/{}",
                first["id"].as_str().expect("id")
            ))
            .bearer_auth(&key)
            .send()
            .await
            .expect("answers");
        assert_eq!(
            purchase.status().as_u16(),
            200,
            "acknowledged purchase {idempotency_key} lost"
        );
        let retry = client
            .post(format!("{base}/v1/purchases"))
            .bearer_auth(&key)
            .header("Idempotency-Key", idempotency_key)
            .json(body)
            .send()
            .await
            .expect("answers");
        assert_eq!(retry.status().as_u16(), 201);
        assert_eq!(
            &retry.text().await.expect("body"),
            first_answer,
            "replay of {idempotency_key}"
        );
    }
    server.kill().expect("stop the server");
    server.wait().expect("stopped");

    let verify = Command::new(env!("CARGO_BIN_EXE_loyalty"))
        .args(["verify", "--database", &database])
        .output()
        .expect("verify runs");
    assert!(
        verify.status.success(),
        "verify failed after the crash:\n{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let _ = std::fs::remove_dir_all(&directory);
}
