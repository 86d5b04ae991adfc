//! `orders`: a shop's orders, written with collector-sdk.
//!
//! Collections (grant both): `products` (orders.Product, read-only is
//! enough) and `orders` (orders.Order, read-write). `Create` validates the
//! basket by invoking `Price`, so pricing rules live in one method.

use collector_sdk::{Collection, Context, Doc, Error, Query, Result, handler, log};

/// The prost types of proto/orders.proto.
mod pb {
    include!(concat!(env!("OUT_DIR"), "/orders.rs"));
}
use pb::{
    CreateOrder, CustomerRef, CustomerSummary, LineItem, ListOrders, Order, OrderPage, OrderRef,
    Product, Quote,
};

const MAX_ITEMS: usize = 100;
const MAX_QUANTITY: i64 = 10_000;

fn orders() -> Result<Collection<Order>> {
    Collection::open("orders")
}

/// An order as replies show it: with its record id.
fn with_id(doc: Doc<Order>) -> Order {
    Order { id: doc.id, ..doc.value }
}

fn require(field: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(Error::invalid(format!("{field} is required")));
    }
    Ok(())
}

fn price(_: &Context, req: CreateOrder) -> Result<Quote> {
    require("customer", &req.customer)?;
    if req.items.is_empty() || req.items.len() > MAX_ITEMS {
        return Err(Error::invalid(format!(
            "an order has 1 to {MAX_ITEMS} items, this one has {}",
            req.items.len()
        )));
    }
    let products = Collection::<Product>::open("products")?;
    let mut quote = Quote::default();
    for (i, item) in req.items.into_iter().enumerate() {
        if !(1..=MAX_QUANTITY).contains(&item.quantity) {
            return Err(Error::invalid(format!(
                "items[{i}].quantity must be 1 to {MAX_QUANTITY}, not {}",
                item.quantity
            )));
        }
        let Some(product) = products.find(&item.sku)? else {
            return Err(Error::invalid(format!(
                "items[{i}].sku {:?} is not in the catalogue",
                item.sku
            )));
        };
        let unit = product.value.price_cents;
        quote.total_cents = unit
            .checked_mul(item.quantity)
            .and_then(|line| line.checked_add(quote.total_cents))
            .ok_or_else(|| Error::invalid("the order total overflows"))?;
        quote.items.push(LineItem {
            sku: item.sku,
            quantity: item.quantity,
            unit_cents: unit,
        });
    }
    Ok(quote)
}

fn create(ctx: &Context, req: CreateOrder) -> Result<Order> {
    let quote: Quote = ctx.invoke("Price", &req)?;
    let order = Order {
        id: String::new(),
        customer: req.customer,
        items: quote.items,
        total_cents: quote.total_cents,
        status: "open".into(),
        note: req.note,
    };
    let doc = orders()?.create("", &order)?;
    log::info(format!(
        "order {} for {}: {} cents",
        doc.id, doc.value.customer, doc.value.total_cents
    ));
    Ok(with_id(doc))
}

fn get(_: &Context, req: OrderRef) -> Result<Order> {
    require("id", &req.id)?;
    Ok(with_id(orders()?.get(&req.id)?))
}

fn list(_: &Context, req: ListOrders) -> Result<OrderPage> {
    require("customer", &req.customer)?;
    let mut q = Query::new()
        .eq("customer", req.customer)
        .order_by_desc("total_cents")
        .limit(req.page_size)
        .after(req.page_token);
    if !req.status.is_empty() {
        q = q.eq("status", req.status);
    }
    if req.min_total_cents > 0 {
        q = q.ge("total_cents", req.min_total_cents);
    }
    let page = orders()?.search(&q)?;
    Ok(OrderPage {
        orders: page.docs.into_iter().map(with_id).collect(),
        next_page_token: page.next_page_token,
    })
}

fn pay(_: &Context, req: OrderRef) -> Result<Order> {
    require("id", &req.id)?;
    let orders = orders()?;
    let mut doc = orders.get(&req.id)?;
    if doc.value.status != "open" {
        return Err(Error::conflict(format!(
            "order {} is {}; only open orders can be paid",
            doc.id, doc.value.status
        )));
    }
    doc.value.status = "paid".into();
    Ok(with_id(orders.update(&doc)?))
}

fn summary(_: &Context, req: CustomerRef) -> Result<CustomerSummary> {
    require("customer", &req.customer)?;
    let orders = orders()?;
    let mine = Query::new().eq("customer", req.customer.as_str());
    let open = orders.search_all(&mine.clone().eq("status", "open"))?;
    Ok(CustomerSummary {
        open_orders: open.len() as i64,
        paid_orders: orders.count(&mine.eq("status", "paid"))?,
        open_cents: open.iter().map(|d| d.value.total_cents).sum(),
        customer: req.customer,
    })
}

handler! {
    "Price" => price,
    "Create" => create,
    "Get" => get,
    "List" => list,
    "Pay" => pay,
    "Summary" => summary,
}
