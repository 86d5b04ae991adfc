//! Hostile: calls a host function in a tight loop (the host-call cap must stop it).
wit_bindgen::generate!({ path: "../../wit", world: "handler" });

use collector::runtime::log;

struct Chatty;

impl Guest for Chatty {
    fn handle(_ctx: CallContext, _input: Vec<u8>) -> Result<Vec<u8>, Error> {
        loop {
            log::log(log::Level::Trace, "again");
        }
    }
}

export!(Chatty);
