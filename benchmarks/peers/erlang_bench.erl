%% The benchmark workloads on Erlang/OTP: two nodes in two OS processes over
%% loopback distribution (started by benchmarks/erlang_peer.py).
%%
%% Server node: registered processes sink (W1), echo (W2), responder (a
%% gen_server, W2-call) and bulk; add/2 is called with erpc (W3a/W3b). It
%% prints READY and halts when the client node goes down.
%% Client node: runs one workload against the server node and prints
%% RESULT {json}, the same record the Python clients print.
-module(erlang_bench).
-behaviour(gen_server).
-export([server/0, client/1, add/2]).
-export([init/1, handle_call/3, handle_cast/2]).

-define(BODY, <<"xxxxxxxxxxxxxxxx">>).
-define(BULK_SIZE, 16777216).
-define(IN_FLIGHT, 64).

%% ------------------------------------------------------------------ server

server() ->
    register(sink, spawn(fun sink_hello/0)),
    register(echo, spawn(fun echo_hello/0)),
    register(bulk, spawn(fun bulk_hello/0)),
    {ok, _} = gen_server:start({local, responder}, ?MODULE, [], []),
    ok = net_kernel:monitor_nodes(true),
    io:format("READY~n"),
    wait_client(false).

wait_client(Seen) ->
    receive
        {nodeup, _} -> wait_client(true);
        {nodedown, _} when Seen -> erlang:halt(0);
        {nodedown, _} -> wait_client(Seen)
    end.

add(A, B) -> A + B.

init([]) -> {ok, nostate}.
handle_call(Request, _From, State) -> {reply, Request, State}.
handle_cast(_, State) -> {noreply, State}.

hello() ->
    receive
        #{hello := Pid} when is_pid(Pid) -> Pid;
        _ -> hello()
    end.

sink_hello() ->
    Peer = hello(),
    Peer ! #{pid => self()},
    sink(Peer, 0, 0, 0, 0).

sink(Peer, 0, _, _, _) ->
    receive
        done -> report(Peer, 0, 0, 0, 0);
        _ -> sink(Peer, 1, now_ns(), now_ns(), cpu_ns())
    end;
sink(Peer, Count, First, _Last, Cpu0) ->
    receive
        done -> report(Peer, Count, First, now_ns(), Cpu0);
        _ -> sink_count(Peer, Count + 1, First, Cpu0)
    end.

%% The last-message time is read when "done" arrives minus nothing: the
%% sender says done right after its last message, as the Python clients do.
sink_count(Peer, Count, First, Cpu0) ->
    receive
        done -> report(Peer, Count, First, now_ns(), Cpu0);
        _ -> sink_count(Peer, Count + 1, First, Cpu0)
    end.

report(Peer, Count, First, Last, Cpu0) ->
    Peer ! #{count => Count, elapsed => (Last - First) / 1.0e9,
             cpu => (cpu_ns() - Cpu0) / 1.0e9},
    sink_hello().

echo_hello() ->
    Peer = hello(),
    Peer ! #{pid => self()},
    echo(Peer).

echo(Peer) ->
    receive
        done -> echo_hello();
        Message -> Peer ! Message, echo(Peer)
    end.

bulk_hello() ->
    Peer = hello(),
    Peer ! #{pid => self()},
    bulk(Peer).

bulk(Peer) ->
    receive
        done -> bulk_hello();
        Data when is_binary(Data) -> Peer ! byte_size(Data), bulk(Peer)
    end.

now_ns() -> erlang:monotonic_time(nanosecond).
cpu_ns() -> {Total, _} = statistics(runtime), Total * 1000000.

%% ------------------------------------------------------------------ client

client([ServerNode, Workload, Count, Warmup, Duration]) ->
    Server = list_to_atom(ServerNode),
    true = net_kernel:connect_node(Server),
    Result = run(Workload, Server, list_to_integer(Count), list_to_integer(Warmup),
                 list_to_float(Duration)),
    io:format("RESULT ~s~n", [json(Result)]),
    erlang:halt(0).

greet(Name, Server) ->
    {Name, Server} ! #{hello => self()},
    receive #{pid := Pid} -> Pid after 10000 -> exit(no_hello) end.

run("w1", Server, _, _, Duration) ->
    Sink = greet(sink, Server),
    Start = now_ns(),
    Deadline = Start + round(Duration * 1.0e9),
    Sent = w1_loop(Sink, 0, Deadline),
    SendElapsed = (now_ns() - Start) / 1.0e9,
    Sink ! done,
    receive
        #{count := Received, elapsed := Elapsed} ->
            Rate = case Elapsed > 0 of true -> Received / Elapsed; false -> 0.0 end,
            [{workload, "w1"}, {sent, Sent}, {received, Received},
             {msgs_per_s, Rate}, {receiver_elapsed_s, Elapsed},
             {sender_elapsed_s, SendElapsed}, {sender_msgs_per_s, Sent / SendElapsed},
             {lost, Sent - Received}]
    after 30000 -> exit(no_w1_report)
    end;
run("w2", Server, Count, Warmup, _) ->
    Echo = greet(echo, Server),
    Samples = round_trips(fun(Seq) ->
        Echo ! #{seq => Seq, body => ?BODY},
        receive #{seq := Seq} -> ok end
    end, Warmup, Count),
    Echo ! done,
    [{workload, "w2"} | summary(Samples)];
run("w2call", Server, Count, Warmup, _) ->
    Samples = round_trips(fun(Seq) ->
        #{seq := Seq} = gen_server:call({responder, Server}, #{seq => Seq, body => ?BODY})
    end, Warmup, Count),
    [{workload, "w2call"} | summary(Samples)];
run("w3a", Server, Count, Warmup, _) ->
    calls(Server, Count, Warmup, 1);
run("w3b", Server, Count, Warmup, _) ->
    calls(Server, Count, Warmup, ?IN_FLIGHT);
run("bulk", Server, Count, Warmup, _) ->
    Bulk = greet(bulk, Server),
    Data = binary:copy(<<16#ab>>, ?BULK_SIZE),
    Samples = round_trips(fun(_) ->
        Bulk ! Data,
        receive ?BULK_SIZE -> ok end
    end, Warmup, Count),
    Bulk ! done,
    Sorted = lists:sort(Samples),
    P50 = percentile(Sorted, 0.5),
    Min = hd(Sorted),
    [{workload, "bulk"}, {size, ?BULK_SIZE}, {p50_ms, P50 / 1.0e6}, {min_ms, Min / 1.0e6},
     {gb_per_s, ?BULK_SIZE / (P50 / 1.0e9) / 1.0e9},
     {best_gb_per_s, ?BULK_SIZE / (Min / 1.0e9) / 1.0e9}].

w1_loop(Sink, Seq, Deadline) ->
    Sink ! #{seq => Seq, body => ?BODY},
    Next = Seq + 1,
    case Next band 255 of
        0 ->
            case now_ns() >= Deadline of
                true -> Next;
                false -> w1_loop(Sink, Next, Deadline)
            end;
        _ -> w1_loop(Sink, Next, Deadline)
    end.

round_trips(Fun, Warmup, Count) ->
    [Fun(Seq) || Seq <- lists:seq(0, Warmup - 1)],
    [begin T0 = now_ns(), Fun(Seq), now_ns() - T0 end
     || Seq <- lists:seq(Warmup, Warmup + Count - 1)].

call_add(Server, Seq) ->
    T0 = now_ns(),
    Expected = Seq + 1,
    Expected = erpc:call(Server, ?MODULE, add, [Seq, 1]),
    now_ns() - T0.

%% Count calls from InFlight processes, each calling in turn, as the
%% Python clients do; calls per second over the whole batch.
calls(Server, Count, Warmup, InFlight) ->
    [call_add(Server, Seq) || Seq <- lists:seq(0, Warmup - 1)],
    Self = self(),
    Start = now_ns(),
    PerWorker = Count div InFlight,
    Workers = [spawn_link(fun() ->
                   First = Warmup + W * PerWorker,
                   S = [call_add(Server, Seq) || Seq <- lists:seq(First, First + PerWorker - 1)],
                   Self ! {samples, S}
               end) || W <- lists:seq(0, InFlight - 1)],
    Samples = lists:append([receive {samples, S} -> S end || _ <- Workers]),
    Elapsed = (now_ns() - Start) / 1.0e9,
    Name = case InFlight of 1 -> "w3a"; _ -> "w3b" end,
    [{workload, Name}, {calls, length(Samples)}, {in_flight, InFlight},
     {calls_per_s, length(Samples) / Elapsed} | summary(Samples)].

summary(Samples) ->
    Sorted = lists:sort(Samples),
    N = length(Sorted),
    [{n, N}, {p50_us, percentile(Sorted, 0.5) / 1000}, {p99_us, percentile(Sorted, 0.99) / 1000},
     {mean_us, lists:sum(Sorted) / N / 1000}, {min_us, hd(Sorted) / 1000},
     {max_us, lists:last(Sorted) / 1000}].

%% Linear interpolation, as benchmarks/_common.py's percentile.
percentile(Sorted, Q) ->
    Position = Q * (length(Sorted) - 1),
    Low = trunc(Position),
    High = min(Low + 1, length(Sorted) - 1),
    A = lists:nth(Low + 1, Sorted),
    B = lists:nth(High + 1, Sorted),
    A + (B - A) * (Position - Low).

json(Pairs) ->
    Fields = [io_lib:format("\"~s\": ~s", [Key, value(V)]) || {Key, V} <- Pairs],
    ["{", lists:join(", ", Fields), "}"].

value(V) when is_integer(V) -> integer_to_list(V);
value(V) when is_float(V) -> float_to_list(V, [{decimals, 6}, compact]);
value(V) when is_list(V) -> io_lib:format("\"~s\"", [V]).
