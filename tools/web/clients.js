// The one module a page imports (bundled by `make proto` into
// services/edge/page/clients.js): the Connect runtime and the typed clients
// of gen/web, each proto file as a namespace.
export { Code, ConnectError, createClient } from "@connectrpc/connect";
export { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
export { create, toJson } from "@bufbuild/protobuf";
export { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
export * as matcher from "../../gen/web/eap/matcher/v1/matcher_pb.js";
export * as survey from "../../gen/web/eap/matcher/v1/survey_pb.js";
export * as calendar from "../../gen/web/eap/calendar/v1/calendar_pb.js";
export * as quota from "../../gen/web/eap/quota/v1/quota_pb.js";
export * as rpc from "../../gen/web/google/rpc/error_details_pb.js";
