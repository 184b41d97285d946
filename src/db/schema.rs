//! Diesel's view of the tables (the original agent's schema plus this agent's additions).

diesel::table! {
    schedules (id) {
        id -> Int4,
        name -> Varchar,
        interval -> Int4,
        include_response_body -> Nullable<Bool>,
        thresholds_warning -> Nullable<Int4>,
        thresholds_critical -> Nullable<Int4>,
    }
}

diesel::table! {
    api_monitors (id) {
        id -> Int4,
        name -> Varchar,
        method -> Varchar,
        #[sql_name = "type"]
        monitor_type -> Varchar,
        url -> Text,
        schedule_id -> Nullable<Int4>,
        headers -> Nullable<Jsonb>,
        body -> Nullable<Jsonb>,
        expected_status -> Nullable<Text>,
        body_match -> Nullable<Text>,
        body_match_mode -> Nullable<Varchar>,
        timeout_ms -> Nullable<Int4>,
        max_redirects -> Nullable<Int4>,
        ip_family -> Nullable<Varchar>,
        tls_verify -> Nullable<Bool>,
        min_cert_days -> Nullable<Int4>,
    }
}

diesel::table! {
    regions (id) {
        id -> Int4,
        name -> Varchar,
        region_code -> Nullable<Varchar>,
        group_name -> Nullable<Varchar>,
    }
}

diesel::table! {
    datacenters (id) {
        id -> Int4,
        code -> Varchar,
        name -> Varchar,
        region_id -> Nullable<Int4>,
    }
}

diesel::table! {
    datacenter_monitors (datacenter_id, monitor_id) {
        datacenter_id -> Int4,
        monitor_id -> Int4,
    }
}

diesel::table! {
    agents (id) {
        id -> Int4,
        name -> Varchar,
        datacenter_id -> Nullable<Int4>,
    }
}

diesel::table! {
    api_heartbeats (id, executed_at) {
        id -> Int8,
        monitor_id -> Nullable<Int4>,
        agent_id -> Nullable<Int4>,
        executed_at -> Timestamp,
        success -> Nullable<Bool>,
        response_time_ms -> Nullable<Int4>,
        response_size_bytes -> Nullable<Int4>,
        response_status_code -> Nullable<Int4>,
        response_content_type -> Nullable<Varchar>,
        response_server -> Nullable<Varchar>,
        response_cache_status -> Nullable<Varchar>,
        dns_lookup_ms -> Nullable<Int4>,
        tcp_connect_ms -> Nullable<Int4>,
        tls_handshake_ms -> Nullable<Int4>,
        time_to_first_byte_ms -> Nullable<Int4>,
        warning_threshold_ms -> Nullable<Int4>,
        critical_threshold_ms -> Nullable<Int4>,
        error_type -> Nullable<Varchar>,
        error_message -> Nullable<Text>,
        raw_request_headers -> Nullable<Jsonb>,
        raw_response_headers -> Nullable<Jsonb>,
        raw_response_body -> Nullable<Jsonb>,
        status -> Nullable<Varchar>,
        lease_epoch -> Nullable<Int8>,
        scheduled_at -> Nullable<Timestamp>,
        details -> Nullable<Jsonb>,
    }
}

diesel::table! {
    datacenter_leases (datacenter_id) {
        datacenter_id -> Int4,
        holder_agent_id -> Nullable<Int4>,
        holder_instance -> Nullable<Text>,
        epoch -> Int8,
        acquired_at -> Nullable<Timestamptz>,
        renewed_at -> Nullable<Timestamptz>,
        expires_at -> Timestamptz,
    }
}

diesel::joinable!(api_monitors -> schedules (schedule_id));
diesel::joinable!(datacenter_monitors -> api_monitors (monitor_id));
diesel::joinable!(datacenter_monitors -> datacenters (datacenter_id));
diesel::joinable!(agents -> datacenters (datacenter_id));

diesel::allow_tables_to_appear_in_same_query!(
    schedules,
    api_monitors,
    regions,
    datacenters,
    datacenter_monitors,
    agents,
    api_heartbeats,
    datacenter_leases,
);
