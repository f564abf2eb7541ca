//! Real domain values for the suite, built through the domain's own constructors so the
//! stored shapes are the ones production writes.

// Test data that the domain refuses is a broken test, not a condition to handle: these
// helpers panic with a message (clippy allows `expect` only inside `#[test]` bodies).
#![allow(clippy::expect_used)]

use cartwheel_domain::{
    Cart, Currency, Event, Inventory, Order, OrderStatus, Product, ProductDraft, SagaStep,
    Timestamp,
};

/// A fixed instant: the suite never reads a clock.
pub const T0: Timestamp = Timestamp(1_767_225_600_000);

/// `T0` plus `ms` milliseconds.
pub fn at(ms: i64) -> Timestamp {
    T0.plus_millis(ms)
}

/// An active EUR product.
pub fn product(sku: &str, category: &str, price: i64) -> Product {
    Product::create(
        ProductDraft {
            sku: sku.to_owned(),
            name: format!("Product {sku}"),
            description: format!("A fine {category} item, sku {sku}.\nSecond line."),
            price,
            currency: Currency::new("EUR").expect("EUR is a currency"),
            category: category.to_owned(),
            active: true,
        },
        T0,
    )
    .expect("a valid product")
}

/// An open cart of `user` with two lines.
pub fn cart(id: &str, user: &str) -> Cart {
    let mut cart = Cart::new(id, user, T0).expect("a valid cart");
    cart.add_item(&product("sku-a", "shoes", 1999), 2, at(1))
        .expect("add a");
    cart.add_item(&product("sku-b", "hats", 500), 1, at(2))
        .expect("add b");
    cart
}

/// A `PENDING` order of `user`, placed at `created`, from a checked-out cart.
pub fn order(id: &str, user: &str, created: Timestamp) -> Order {
    let mut cart = cart(&format!("cart-{id}"), user);
    cart.check_out(&format!("key-{id}"), id, created)
        .expect("check out");
    Order::place(id, &cart, &format!("key-{id}"), created).expect("place")
}

/// Moves `order` along legal transitions to `status`.
pub fn advance(order: &mut Order, status: OrderStatus) {
    use OrderStatus::*;
    let now = order.updated_at.plus_millis(1);
    let path: &[(OrderStatus, SagaStep)] = match status {
        Pending => &[],
        ProductReserved => &[(ProductReserved, SagaStep::Pay)],
        Confirmed => &[
            (ProductReserved, SagaStep::Pay),
            (Confirmed, SagaStep::Commit),
        ],
        Completed => &[
            (ProductReserved, SagaStep::Pay),
            (Confirmed, SagaStep::Done),
            (Completed, SagaStep::Done),
        ],
        Cancelled => &[
            (ProductReserved, SagaStep::Pay),
            (Confirmed, SagaStep::Done),
            (Cancelled, SagaStep::Restock),
        ],
        Failed => {
            order.fail("payment declined", now).expect("fail");
            return;
        }
    };
    for (to, step) in path {
        order.transition(*to, *step, now).expect("legal transition");
    }
}

/// Stock of `sku` with one open reservation and one committed order.
pub fn inventory(sku: &str) -> Inventory {
    let mut inv = Inventory::new(sku);
    inv.set_on_hand(40).expect("set on hand");
    inv.reserve("order-1", 3, at(5)).expect("reserve 1");
    inv.reserve("order-2", 4, at(6)).expect("reserve 2");
    inv.commit("order-2").expect("commit 2");
    inv
}

/// One event of every kind, about consistent entities.
pub fn every_kind_of_event() -> Vec<Event> {
    let cart = cart("c-evt", "u-evt");
    let order = order("o-evt", "u-evt", at(10));
    let mut reserved = order.clone();
    advance(&mut reserved, OrderStatus::ProductReserved);
    let product = product("sku-evt", "hats", 700);
    vec![
        Event::CartUpdated { cart: cart.clone() },
        Event::CartCheckedOut {
            cart,
            order_id: order.id.clone(),
        },
        Event::OrderCreated { order },
        Event::OrderStatusUpdated {
            order: reserved,
            from: OrderStatus::Pending,
        },
        Event::StockUpdated {
            inventory: inventory("sku-evt").view(),
        },
        Event::ProductCreated {
            product: product.clone(),
        },
        Event::ProductUpdated {
            product: product.clone(),
        },
        Event::PriceChanged {
            product,
            old_price: 650,
        },
    ]
}
