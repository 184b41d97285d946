//! DNS answers of the loopback DNS servers of the tests and of `examples/delay_target.rs`
//! (which includes this file by path).

use hickory_resolver::proto::op::{Message, MessageType};

/// An empty response to `query`: its id, op code and questions.
fn response_to(query: &Message) -> Message {
    let mut response = Message::new();
    response
        .set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(query.op_code())
        .set_recursion_desired(query.recursion_desired())
        .set_recursion_available(true);
    for q in query.queries() {
        response.add_query(q.clone());
    }
    response
}

/// The response to a query packet: the table's records of the asked name and type.
pub fn dns_answer(packet: &[u8], table: &[(String, std::net::IpAddr)]) -> Option<Vec<u8>> {
    use hickory_resolver::proto::rr::{rdata, RData, Record, RecordType};
    let query = Message::from_vec(packet).ok()?;
    let mut response = response_to(&query);
    response.set_authoritative(true);
    for q in query.queries() {
        let name = q.name().to_ascii().to_ascii_lowercase();
        for (_, ip) in table.iter().filter(|(n, _)| *n == name) {
            let data = match (q.query_type(), ip) {
                (RecordType::A, std::net::IpAddr::V4(v4)) => RData::A(rdata::A(*v4)),
                (RecordType::AAAA, std::net::IpAddr::V6(v6)) => RData::AAAA(rdata::AAAA(*v6)),
                _ => continue,
            };
            response.add_answer(Record::from_rdata(q.name().clone(), 60, data));
        }
    }
    response.to_vec().ok()
}

/// A response to a query packet with no records and the truncation bit set: the client is to
/// ask again over TCP.
pub fn truncated_answer(packet: &[u8]) -> Option<Vec<u8>> {
    let query = Message::from_vec(packet).ok()?;
    let mut response = response_to(&query);
    response.set_truncated(true);
    response.to_vec().ok()
}
