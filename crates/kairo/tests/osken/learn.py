"""A learning switch for kairo's controller test (os-ken, OpenFlow 1.3)."""
import os

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import CONFIG_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.lib.packet import ethernet, packet
from os_ken.ofproto import ofproto_v1_3

LOG = os.environ["KAIRO_OSKEN_LOG"]


def note(line):
    with open(LOG, "a") as f:
        f.write(line + "\n")


class Learn(app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.macs = {}

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def features(self, ev):
        dp = ev.msg.datapath
        o, p = dp.ofproto, dp.ofproto_parser
        miss = [p.OFPActionOutput(o.OFPP_CONTROLLER, o.OFPCML_NO_BUFFER)]
        inst = [p.OFPInstructionActions(o.OFPIT_APPLY_ACTIONS, miss)]
        dp.send_msg(p.OFPFlowMod(datapath=dp, priority=0, match=p.OFPMatch(), instructions=inst))
        note("features %016x" % dp.id)

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def packet_in(self, ev):
        msg = ev.msg
        dp = msg.datapath
        o, p = dp.ofproto, dp.ofproto_parser
        in_port = msg.match["in_port"]
        eth = packet.Packet(msg.data).get_protocols(ethernet.ethernet)[0]
        self.macs[eth.src] = in_port
        out = self.macs.get(eth.dst, o.OFPP_FLOOD)
        acts = [p.OFPActionOutput(out)]
        if out != o.OFPP_FLOOD:
            match = p.OFPMatch(in_port=in_port, eth_dst=eth.dst, eth_src=eth.src)
            inst = [p.OFPInstructionActions(o.OFPIT_APPLY_ACTIONS, acts)]
            dp.send_msg(p.OFPFlowMod(datapath=dp, priority=1, match=match, idle_timeout=2,
                                     flags=o.OFPFF_SEND_FLOW_REM, instructions=inst))
            note("flow in_port=%d dl_dst=%s output=%d" % (in_port, eth.dst, out))
        dp.send_msg(p.OFPPacketOut(datapath=dp, buffer_id=o.OFP_NO_BUFFER, in_port=in_port,
                                   actions=acts, data=msg.data))
        note("packet_in in_port=%d reason=%d" % (in_port, msg.reason))

    @set_ev_cls(ofp_event.EventOFPFlowRemoved, MAIN_DISPATCHER)
    def removed(self, ev):
        note("removed reason=%d idle=%d packets=%d" % (ev.msg.reason, ev.msg.idle_timeout, ev.msg.packet_count))

    @set_ev_cls(ofp_event.EventOFPErrorMsg, MAIN_DISPATCHER)
    def error(self, ev):
        note("error type=%d code=%d" % (ev.msg.type, ev.msg.code))
