use collector_sdk::{Collection, Context, Error, Query, Result, handler};

mod pb {
    include!(concat!(env!("OUT_DIR"), "/guestbook.rs"));
}
use pb::{Entries, Entry, Recent};

fn sign(_ctx: &Context, entry: Entry) -> Result<Entry> {
    if entry.name.is_empty() || entry.text.is_empty() {
        return Err(Error::invalid("name and text are both required"));
    }
    let book = Collection::<Entry>::open("entries")?;
    Ok(book.create("", &entry)?.value)
}

fn latest(_ctx: &Context, req: Recent) -> Result<Entries> {
    let book = Collection::<Entry>::open("entries")?;
    let page = book.search(&Query::new().order_by_desc("_created").limit(req.limit.max(1)))?;
    Ok(Entries {
        entries: page.docs.into_iter().map(|d| d.value).collect(),
    })
}

handler! {
    "Sign" => sign,
    "Latest" => latest,
}
