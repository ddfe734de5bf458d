//! The first end-to-end path on both backends: merchant, store, member, purchase, refund.

use loyalty_tests::{backend_tests, json, Backend, TestServer};

async fn purchase_and_refund(backend: Backend) {
    let server = TestServer::start(backend).await;
    let merchant = server.merchant("Cafe", "CNY").await;
    let store = server.store(&merchant.key).await;
    let member = server
        .post(
            "/v1/members",
            &merchant.key,
            &json!({"phone": "13800138000"}),
        )
        .await
        .id();
    let purchase = server
        .post_idem(
            "/v1/purchases",
            &merchant.key,
            "p1",
            &json!({"member_id": member, "store_id": store,
                    "items": [{"sku": "TEA", "quantity": 2, "unit_price": "12.50"}],
                    "payments": [{"method": "cash", "amount": "25.00"}]}),
        )
        .await;
    let body = purchase.ok(201);
    assert_eq!(body["total"], "25.00");
    assert_eq!(body["points_awarded"], 25);
    assert_eq!(body["balances"]["points"]["available"], 25);
    let refund = server
        .post_idem(
            &format!("/v1/purchases/{}/refunds", purchase.id()),
            &merchant.key,
            "r1",
            &json!({"amount": "10.00"}),
        )
        .await;
    assert_eq!(refund.ok(201)["points_reversed"], 10);
    server.verify().await;
}

backend_tests!(purchase_and_refund);
